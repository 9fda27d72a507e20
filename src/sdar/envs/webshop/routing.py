"""Skill routing for WebShop: category keywords in the instruction.

Described in docs/algorithm.md, "Skills and routing".

Each category has a list of keywords (product nouns and a few strong category words). An
instruction routes to every category with a keyword in it, as a whole word or phrase, with an
optional plural ``s``/``es``; several categories may match ("a backpack with a usb charging port"
-> accessories and electronics), and an instruction with none gets the general skills only.
"""

from __future__ import annotations

import re

from sdar.envs.webshop.catalog import CATEGORIES

# Category key -> keywords. Every product type's own name routes to its category
# (tests/test_webshop_routing.py checks all goals), so keep type names covered when adding types.
CATEGORY_KEYWORDS: dict[str, tuple[str, ...]] = {
    "apparel": (
        "t-shirt",
        "shirt",
        "tee",
        "hoodie",
        "sweatshirt",
        "sweater",
        "jeans",
        "pants",
        "leggings",
        "shorts",
        "dress",
        "jacket",
        "coat",
        "pajama",
        "pajama set",
        "sock",
        "clothing",
        "apparel",
        "blouse",
        "skirt",
    ),
    "footwear": (
        "shoe",
        "running shoes",
        "sneaker",
        "boot",
        "sandal",
        "flip flop",
        "slipper",
        "loafer",
        "high heel",
        "heeled",
        "pump",
        "footwear",
    ),
    "home_decor": (
        "pillow",
        "pillow cover",
        "curtain",
        "rug",
        "lamp",
        "wall art",
        "mirror",
        "candle",
        "blanket",
        "duvet",
        "bedding",
        "artificial plant",
        "vase",
        "home decor",
        "decor",
    ),
    "electronics": (
        "earbud",
        "headphone",
        "speaker",
        "charger",
        "charging cable",
        "cable",
        "hdmi",
        "mouse",
        "keyboard",
        "power bank",
        "webcam",
        "smart plug",
        "microsd",
        "memory card",
        "usb",
        "bluetooth",
        "electronics",
    ),
    "accessories": (
        "wallet",
        "sunglass",
        "backpack",
        "tote bag",
        "handbag",
        "purse",
        "belt",
        "watch band",
        "phone case",
        "cap",
        "hat",
        "scarf",
        "umbrella",
        "earring",
        "jewelry",
        "accessories",
    ),
    "beauty_health": (
        "shampoo",
        "conditioner",
        "serum",
        "lipstick",
        "nail polish",
        "sunscreen",
        "lotion",
        "toothbrush",
        "hair dryer",
        "vitamin",
        "multivitamin",
        "gummies",
        "supplement",
        "deodorant",
        "makeup",
        "skin care",
        "skincare",
        "beauty",
    ),
    "other": (
        "coffee",
        "tea",
        "protein bar",
        "nuts",
        "olive oil",
        "snack",
        "dog",
        "cat",
        "cat litter",
        "dog treats",
        "notebook",
        "pen",
        "gel pens",
        "building blocks",
        "toy",
        "yoga mat",
        "grocery",
        "food",
    ),
}

_PATTERNS: dict[str, re.Pattern] = {
    category: re.compile(
        r"(?<![\w-])(?:"
        + "|".join(re.escape(k) for k in sorted(words, key=len, reverse=True))
        + r")(?:s|es)?(?![\w-])"
    )
    for category, words in CATEGORY_KEYWORDS.items()
}
assert set(_PATTERNS) == set(CATEGORIES), "every category needs keywords"


def route_instruction(instruction: str) -> tuple[str, ...]:
    """The category keys whose keywords occur in ``instruction``, in ``CATEGORIES`` order.

    ``()`` means no category matched: the teacher then sees the general skills only.
    """
    text = instruction.lower()
    return tuple(c for c in CATEGORIES if _PATTERNS[c].search(text))
