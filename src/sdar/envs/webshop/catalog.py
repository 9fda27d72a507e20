"""The generated product catalog of the offline WebShop.

The real WebShop sells 1.18 M scraped Amazon products that cannot be downloaded on offline machines,
so this module writes a catalog of its own with the same shape: every product has an item id in
Amazon's style (``B0...``), a title, a category path, a price, a rating, attributes (the phrases
instructions ask for: "machine washable", "long-lasting"), option groups (size, color, ...) and
description / features / reviews text.

Generation is deterministic per ``seed`` and takes well under a second, so the catalog is rebuilt in
process on first use and cached per process (``load_catalog``); nothing is written to disk.

Honesty of the text, which the scoring relies on: a product's text states exactly the attributes in
its ``attributes`` list and never one of another product (``tests/test_webshop_catalog.py`` checks
every product), so a reader who opens the item's features learns the truth.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

# Category keys (the skill routing keys) and the names shown in category paths.
CATEGORIES: dict[str, str] = {
    "apparel": "apparel",
    "footwear": "footwear",
    "home_decor": "home decor",
    "electronics": "electronics",
    "accessories": "accessories",
    "beauty_health": "beauty and health",
    "other": "other",
}

# ----- option value pools -----------------------------------------------------------------------
SIZE = ("x-small", "small", "medium", "large", "x-large", "xx-large")
SHOE_SIZE = ("6", "6.5", "7", "7.5", "8", "8.5", "9", "9.5", "10", "10.5", "11", "12")
JEANS_SIZE = ("28w x 30l", "30w x 30l", "32w x 32l", "34w x 32l", "36w x 34l", "38w x 34l")
COLOR_WEAR = ("black", "white", "navy blue", "heather grey", "burgundy", "olive green", "khaki",
              "light blue", "charcoal", "red", "pink", "beige")
COLOR_HOME = ("ivory", "sage green", "dusty rose", "charcoal grey", "teal", "mustard yellow",
              "natural", "walnut brown", "white", "black")
COLOR_TECH = ("black", "white", "silver", "space grey", "blue", "rose gold")
COLOR_ACC = ("black", "brown", "tan", "navy blue", "grey", "burgundy", "green", "rose gold")
LIP_COLOR = ("nude", "ruby red", "berry", "coral", "mauve", "plum", "pink blush")
METAL = ("gold", "silver", "rose gold")
FL_OZ = ("1 fl oz", "1.7 fl oz", "3.4 fl oz", "8 fl oz", "16 fl oz")
PACK = ("pack of 1", "pack of 2", "pack of 3", "pack of 4", "pack of 6", "pack of 12")
SCENT = ("lavender", "vanilla", "eucalyptus", "sandalwood", "citrus", "unscented", "ocean breeze")
PILLOW_SIZE = ("16 x 16 inch", "18 x 18 inch", "20 x 20 inch", "24 x 24 inch")
CURTAIN_LENGTH = ("63 inch", "84 inch", "95 inch", "108 inch")
RUG_SIZE = ("2 x 3 ft", "3 x 5 ft", "4 x 6 ft", "5 x 7 ft", "8 x 10 ft")
ART_SIZE = ("12 x 16 inch", "16 x 24 inch", "24 x 36 inch")
BLANKET_SIZE = ("50 x 60 inch", "60 x 80 inch", "90 x 90 inch")
BED_SIZE = ("twin", "full", "queen", "king")
PLANT_HEIGHT = ("12 inch", "24 inch", "36 inch", "48 inch")
CABLE_LENGTH = ("3 ft", "6 ft", "10 ft", "15 ft")
WATTAGE = ("20w", "30w", "45w", "65w", "100w")
SWITCH = ("red switch", "blue switch", "brown switch")
MAH = ("5000mah", "10000mah", "20000mah", "26800mah")
STORAGE = ("32gb", "64gb", "128gb", "256gb", "512gb")
BAND_SIZE = ("38mm", "40mm", "41mm", "42mm", "44mm", "45mm")
PHONE_SIZE = ("5.4 inch", "6.1 inch", "6.7 inch")
BELT_SIZE = ("small", "medium", "large", "x-large")
COUNT = ("30 count", "60 count", "90 count", "120 count")
TEA_COUNT = ("20 count", "40 count", "100 count")
GROCERY_SIZE = ("8 ounce", "12 ounce", "16 ounce", "2 pound")
LITTER_SIZE = ("10 pound", "20 pound", "40 pound")
PET_SIZE = ("small breed", "medium breed", "large breed")
COFFEE_FLAVOR = ("original", "french vanilla", "hazelnut", "caramel", "dark chocolate")
TEA_FLAVOR = ("peppermint", "chamomile", "ginger lemon", "hibiscus", "rooibos")
BAR_FLAVOR = ("chocolate chip", "peanut butter", "cookies and cream", "lemon", "mixed berry")
GUMMY_FLAVOR = ("orange", "strawberry", "mixed berry", "lemon")
DOG_FLAVOR = ("chicken", "beef", "salmon", "peanut butter", "sweet potato")
BLOCK_PIECES = ("100 pieces", "250 pieces", "500 pieces", "1000 pieces")


@dataclass(frozen=True)
class ProductType:
    """One kind of product the generator makes (``running shoes``, ``blackout curtains``).

    Attributes:
        name: the product type as instructions name it.
        category: category key (see ``CATEGORIES``).
        subcategory: middle level of the category path.
        attributes: the attribute phrases products of this type may have.
        options: option groups ``(group name, value pool)`` every product of this type offers.
        price_range: (lowest, highest) list price in dollars.
    """

    name: str
    category: str
    subcategory: str
    attributes: tuple[str, ...]
    options: tuple[tuple[str, tuple[str, ...]], ...]
    price_range: tuple[float, float]

    @property
    def category_path(self) -> tuple[str, str, str]:
        return (CATEGORIES[self.category], self.subcategory, self.name)


def _t(name, category, subcategory, attributes, options, low, high) -> ProductType:
    return ProductType(name, category, subcategory, tuple(attributes.split(", ")), tuple(options),
                       (float(low), float(high)))


_SC, _C = ("size", SIZE), ("color", COLOR_WEAR)
PRODUCT_TYPES: tuple[ProductType, ...] = (
    # ----- apparel
    _t("t-shirt", "apparel", "tops", "machine washable, short sleeve, crew neck, moisture wicking, "
       "relaxed fit, tagless, pre-shrunk, organic cotton", [_SC, _C], 8, 30),
    _t("hoodie", "apparel", "tops", "machine washable, fleece lined, kangaroo pocket, drawstring hood, "
       "relaxed fit, heavyweight, zip up", [_SC, _C], 20, 60),
    _t("polo shirt", "apparel", "tops", "short sleeve, moisture wicking, wrinkle free, slim fit, "
       "machine washable, button placket, uv protection", [_SC, _C], 15, 45),
    _t("sweater", "apparel", "tops", "cable knit, crew neck, wool blend, relaxed fit, turtleneck, "
       "ribbed cuffs, hand wash only", [_SC, _C], 25, 80),
    _t("jeans", "apparel", "bottoms", "slim fit, stretch denim, high waist, button closure, "
       "relaxed fit, machine washable, distressed, straight leg", [("size", JEANS_SIZE), _C], 25, 70),
    _t("leggings", "apparel", "activewear", "high waist, squat proof, moisture wicking, four-way stretch, "
       "side pockets, tummy control, ankle length", [_SC, _C], 12, 40),
    _t("athletic shorts", "apparel", "activewear", "quick dry, elastic waist, zip pockets, "
       "built-in liner, drawstring waist, reflective details", [_SC, _C], 10, 35),
    _t("summer dress", "apparel", "dresses", "sleeveless, v-neck, midi length, floral print, with pockets, "
       "machine washable, smocked waist, adjustable straps", [_SC, _C], 20, 65),
    _t("winter jacket", "apparel", "outerwear", "water resistant, windproof, insulated, detachable hood, "
       "zip pockets, packable, fleece lined", [_SC, _C], 40, 160),
    _t("pajama set", "apparel", "sleepwear", "button down, elastic waist, long sleeve, machine washable, "
       "short sleeve, tagless, satin finish", [_SC, _C], 18, 50),
    _t("crew socks", "apparel", "socks", "cushioned sole, moisture wicking, arch support, "
       "reinforced heel, odor control, seamless toe", [_SC, ("pack", PACK)], 8, 30),
    # ----- footwear
    _t("running shoes", "footwear", "athletic", "breathable mesh, lightweight, cushioned sole, non-slip, "
       "arch support, wide toe box, reflective details", [("size", SHOE_SIZE), _C], 35, 140),
    _t("sneakers", "footwear", "casual", "canvas upper, lace-up, rubber sole, memory foam insole, "
       "slip-on, lightweight, low top", [("size", SHOE_SIZE), _C], 25, 90),
    _t("hiking boots", "footwear", "boots", "waterproof, ankle support, slip resistant, lug sole, "
       "lightweight, insulated, breathable mesh", [("size", SHOE_SIZE), _C], 50, 180),
    _t("work boots", "footwear", "boots", "steel toe, waterproof, slip resistant, oil resistant, "
       "electrical hazard rated, cushioned insole", [("size", SHOE_SIZE), _C], 60, 200),
    _t("rain boots", "footwear", "boots", "waterproof, pull-on, mid calf, non-slip, "
       "removable insole, easy to clean", [("size", SHOE_SIZE), _C], 25, 80),
    _t("sandals", "footwear", "sandals", "adjustable strap, arch support, open toe, quick dry, non-slip, "
       "cushioned footbed", [("size", SHOE_SIZE), _C], 15, 70),
    _t("flip flops", "footwear", "sandals", "quick dry, arch support, waterproof, lightweight, "
       "textured footbed", [("size", SHOE_SIZE), _C], 8, 35),
    _t("slippers", "footwear", "indoor", "memory foam, faux fur lining, non-slip, indoor outdoor, "
       "machine washable, closed back", [("size", SHOE_SIZE), _C], 12, 45),
    _t("loafers", "footwear", "casual", "leather upper, slip-on, cushioned insole, lightweight, "
       "rubber sole, penny strap", [("size", SHOE_SIZE), _C], 35, 120),
    _t("heeled pumps", "footwear", "dress", "pointed toe, ankle strap, block heel, cushioned insole, "
       "patent leather, slip resistant", [("size", SHOE_SIZE), _C], 30, 110),
    # ----- home decor
    _t("throw pillow covers", "home_decor", "decorative pillows", "hidden zipper, machine washable, "
       "velvet, double sided, set of 2, fade resistant", [("size", PILLOW_SIZE), ("color", COLOR_HOME)], 10, 35),
    _t("blackout curtains", "home_decor", "window treatments", "thermal insulated, noise reducing, "
       "grommet top, machine washable, energy saving, set of 2", [("length", CURTAIN_LENGTH),
                                                                ("color", COLOR_HOME)], 18, 70),
    _t("area rug", "home_decor", "rugs", "non-shedding, low pile, stain resistant, non-slip backing, "
       "machine washable, pet friendly", [("size", RUG_SIZE), ("color", COLOR_HOME)], 30, 250),
    _t("table lamp", "home_decor", "lighting", "dimmable, usb port, touch control, fabric shade, "
       "bulb included, 3-way switch", [("color", COLOR_HOME)], 20, 90),
    _t("canvas wall art", "home_decor", "wall decor", "framed, ready to hang, fade resistant, "
       "gallery wrapped, set of 3", [("size", ART_SIZE)], 20, 120),
    _t("wall mirror", "home_decor", "wall decor", "shatterproof, ready to hang, beveled edge, "
       "metal frame, round shape", [("size", ART_SIZE), ("color", COLOR_HOME)], 25, 150),
    _t("scented candles", "home_decor", "candles", "long-lasting, soy wax, lead-free wick, hand poured, "
       "gift ready", [("scent", SCENT), ("pack", PACK)], 10, 45),
    _t("throw blanket", "home_decor", "bedding", "fleece, machine washable, reversible, fade resistant, "
       "sherpa lined, fringe edges", [("size", BLANKET_SIZE), ("color", COLOR_HOME)], 15, 60),
    _t("duvet cover set", "home_decor", "bedding", "machine washable, button closure, wrinkle resistant, "
       "corner ties, 100% cotton, hypoallergenic", [("size", BED_SIZE), ("color", COLOR_HOME)], 30, 120),
    _t("artificial plant", "home_decor", "decor accents", "realistic, uv resistant, potted, "
       "no maintenance, weighted base", [("height", PLANT_HEIGHT)], 15, 90),
    _t("flower vase", "home_decor", "decor accents", "handmade, ceramic, waterproof, glazed finish, "
       "set of 3", [("color", COLOR_HOME)], 12, 60),
    # ----- electronics
    _t("wireless earbuds", "electronics", "audio", "noise cancelling, bluetooth 5.3, waterproof, "
       "long battery life, charging case, touch control", [("color", COLOR_TECH)], 20, 150),
    _t("over ear headphones", "electronics", "audio", "noise cancelling, foldable, long battery life, "
       "memory foam ear cups, built-in microphone, bluetooth 5.3", [("color", COLOR_TECH)], 30, 250),
    _t("bluetooth speaker", "electronics", "audio", "waterproof, portable, long battery life, "
       "built-in microphone, stereo pairing, dustproof", [("color", COLOR_TECH)], 20, 130),
    _t("usb c wall charger", "electronics", "chargers", "fast charging, foldable plug, dual port, "
       "compact, overheat protection", [("wattage", WATTAGE), ("color", COLOR_TECH)], 10, 60),
    _t("charging cable", "electronics", "cables", "braided, fast charging, tangle free, "
       "data sync, reinforced connectors", [("length", CABLE_LENGTH), ("pack", PACK)], 6, 25),
    _t("hdmi cable", "electronics", "cables", "4k, high speed, gold plated, braided, ethernet support",
       [("length", CABLE_LENGTH), ("pack", PACK)], 6, 35),
    _t("wireless mouse", "electronics", "computer accessories", "ergonomic, silent click, rechargeable, "
       "adjustable dpi, usb receiver", [("color", COLOR_TECH)], 10, 60),
    _t("mechanical keyboard", "electronics", "computer accessories", "backlit, hot swappable, wireless, "
       "compact layout, detachable cable", [("switch", SWITCH), ("color", COLOR_TECH)], 40, 160),
    _t("power bank", "electronics", "chargers", "fast charging, compact, usb c, led display, "
       "dual port, overheat protection", [("capacity", MAH), ("color", COLOR_TECH)], 15, 70),
    _t("webcam", "electronics", "computer accessories", "1080p, built-in microphone, auto focus, "
       "privacy cover, plug and play, wide angle", [("color", COLOR_TECH)], 25, 110),
    _t("smart plug", "electronics", "smart home", "voice control, energy monitoring, no hub required, "
       "compact, scheduling", [("pack", PACK)], 10, 45),
    _t("microsd card", "electronics", "storage", "high speed, with adapter, 4k video, "
       "shock proof, waterproof", [("capacity", STORAGE)], 8, 90),
    # ----- accessories
    _t("leather wallet", "accessories", "wallets", "rfid blocking, genuine leather, slim, bifold, "
       "gift box, coin pocket", [("color", COLOR_ACC)], 15, 70),
    _t("sunglasses", "accessories", "eyewear", "polarized, uv protection, lightweight frame, "
       "scratch resistant, includes case", [("color", COLOR_ACC)], 12, 120),
    _t("backpack", "accessories", "bags", "water resistant, laptop compartment, usb charging port, "
       "anti theft, padded straps", [("color", COLOR_ACC)], 20, 90),
    _t("tote bag", "accessories", "bags", "large capacity, zipper closure, inner pocket, "
       "water resistant, vegan leather", [("color", COLOR_ACC)], 15, 80),
    _t("leather belt", "accessories", "belts", "genuine leather, adjustable, reversible, alloy buckle, "
       "gift box", [("size", BELT_SIZE), ("color", COLOR_ACC)], 12, 50),
    _t("watch band", "accessories", "watch accessories", "quick release, adjustable, sweat resistant, "
       "silicone, stainless steel", [("size", BAND_SIZE), ("color", COLOR_ACC)], 8, 40),
    _t("phone case", "accessories", "phone accessories", "shockproof, slim, wireless charging compatible, "
       "raised edges, card holder", [("size", PHONE_SIZE), ("color", COLOR_ACC)], 8, 40),
    _t("baseball cap", "accessories", "hats", "adjustable strap, breathable, uv protection, "
       "embroidered logo, structured crown", [("color", COLOR_ACC)], 10, 35),
    _t("winter scarf", "accessories", "scarves", "oversized, tassel trim, warm knit, "
       "machine washable, cashmere feel", [("color", COLOR_ACC)], 10, 45),
    _t("travel umbrella", "accessories", "umbrellas", "windproof, auto open close, compact, "
       "uv protection, ergonomic handle", [("color", COLOR_ACC)], 12, 45),
    _t("hoop earrings", "accessories", "jewelry", "hypoallergenic, 14k gold plated, lightweight, "
       "nickel free, gift box", [("color", METAL)], 10, 60),
    # ----- beauty and health
    _t("shampoo", "beauty_health", "hair care", "sulfate free, paraben free, color safe, for dry hair, "
       "cruelty free, vegan", [("size", FL_OZ), ("pack", PACK)], 7, 35),
    _t("face serum", "beauty_health", "skin care", "vitamin c, hyaluronic acid, fragrance free, "
       "non-comedogenic, cruelty free, dermatologist tested", [("size", FL_OZ)], 10, 60),
    _t("lipstick", "beauty_health", "makeup", "long-lasting, matte finish, moisturizing, cruelty free, "
       "vegan, transfer proof", [("color", LIP_COLOR)], 6, 35),
    _t("nail polish", "beauty_health", "makeup", "quick dry, chip resistant, long-lasting, non-toxic, "
       "high shine", [("color", LIP_COLOR), ("pack", PACK)], 5, 25),
    _t("sunscreen", "beauty_health", "skin care", "spf 50, water resistant, reef safe, oil free, "
       "broad spectrum, fragrance free", [("size", FL_OZ), ("pack", PACK)], 8, 35),
    _t("body lotion", "beauty_health", "skin care", "fragrance free, non-greasy, shea butter, "
       "for sensitive skin, paraben free", [("size", FL_OZ), ("scent", SCENT)], 6, 30),
    _t("electric toothbrush", "beauty_health", "oral care", "rechargeable, 2 minute timer, "
       "pressure sensor, travel case, replacement heads included", [("color", COLOR_TECH)], 20, 120),
    _t("hair dryer", "beauty_health", "hair care", "ionic, lightweight, fast drying, diffuser attachment, "
       "foldable handle, low noise", [("color", COLOR_TECH)], 20, 120),
    _t("multivitamin gummies", "beauty_health", "vitamins and supplements", "gluten free, non-gmo, "
       "sugar free, vegan, third party tested", [("count", COUNT), ("flavor", GUMMY_FLAVOR)], 8, 40),
    _t("deodorant", "beauty_health", "personal care", "aluminum free, long-lasting, baking soda free, "
       "cruelty free, travel size", [("scent", SCENT), ("pack", PACK)], 5, 25),
    # ----- other (grocery, pets, office, toys, fitness)
    _t("ground coffee", "other", "grocery", "organic, fair trade, medium roast, dark roast, "
       "kosher, resealable bag", [("size", GROCERY_SIZE), ("flavor", COFFEE_FLAVOR)], 7, 30),
    _t("herbal tea", "other", "grocery", "caffeine free, organic, non-gmo, individually wrapped, "
       "kosher", [("flavor", TEA_FLAVOR), ("count", TEA_COUNT)], 4, 20),
    _t("protein bars", "other", "grocery", "gluten free, high protein, low sugar, non-gmo, "
       "keto friendly, individually wrapped", [("flavor", BAR_FLAVOR), ("pack", PACK)], 10, 45),
    _t("mixed nuts", "other", "grocery", "unsalted, roasted, resealable bag, kosher, non-gmo",
       [("size", GROCERY_SIZE)], 6, 30),
    _t("olive oil", "other", "grocery", "extra virgin, cold pressed, non-gmo, glass bottle, kosher",
       [("size", GROCERY_SIZE), ("pack", PACK)], 8, 45),
    _t("dog treats", "other", "pet supplies", "grain free, natural ingredients, made in usa, "
       "soft chew, high protein", [("flavor", DOG_FLAVOR), ("size", PET_SIZE)], 6, 35),
    _t("cat litter", "other", "pet supplies", "clumping, low dust, odor control, unscented, "
       "lightweight", [("size", LITTER_SIZE)], 8, 40),
    _t("spiral notebook", "other", "office supplies", "college ruled, acid free paper, perforated pages, "
       "hardcover, lay flat", [("color", COLOR_ACC), ("pack", PACK)], 4, 25),
    _t("gel pens", "other", "office supplies", "quick dry, fine point, smudge proof, retractable, "
       "refillable", [("pack", PACK)], 5, 25),
    _t("building blocks", "other", "toys", "bpa free, educational, storage box included, "
       "compatible with major brands", [("pieces", BLOCK_PIECES)], 12, 80),
    _t("yoga mat", "other", "fitness", "non-slip, extra thick, eco friendly, carrying strap, "
       "alignment lines", [("color", COLOR_HOME)], 15, 70),
)
TYPES_BY_NAME: dict[str, ProductType] = {t.name: t for t in PRODUCT_TYPES}
ALL_ATTRIBUTES: tuple[str, ...] = tuple(sorted({a for t in PRODUCT_TYPES for a in t.attributes}))


@dataclass(frozen=True)
class Product:
    """One product of the catalog.

    Attributes:
        item_id: Amazon-style id (``B0`` + 8 characters), unique in the catalog.
        title, brand: display title and the (invented) brand in it.
        product_type: the ``ProductType.name``; ``category``: its category key.
        category_path: ``(category, subcategory, product type)`` as shown on the item page.
        price: in dollars. ``rating``: stars out of 5, or ``None`` ("N.A." on the page).
        attributes: the attribute phrases the product has (its text states exactly these).
        options: ``((group, (value, ...)), ...)`` the buyer chooses from, in display order.
        description, features, reviews: the text behind the item page's tabs.
    """

    item_id: str
    title: str
    brand: str
    product_type: str
    category: str
    category_path: tuple[str, ...]
    price: float
    rating: float | None
    attributes: tuple[str, ...]
    options: tuple[tuple[str, tuple[str, ...]], ...]
    description: str
    features: tuple[str, ...]
    reviews: tuple[str, ...]

    def option_values(self) -> dict[str, tuple[str, ...]]:
        return dict(self.options)

    def search_text(self) -> str:
        """The text the search engine indexes (title, category path, features, description)."""
        return " ".join((self.title, " ".join(self.category_path), " ".join(self.features), self.description))


@dataclass(frozen=True)
class Catalog:
    """All products of one generated catalog, in generation order."""

    seed: int
    products: tuple[Product, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {p.item_id: i for i, p in enumerate(self.products)})

    def __len__(self) -> int:
        return len(self.products)

    def index_of(self, item_id: str) -> int:
        """Position of the product with ``item_id`` (case-insensitive); ``KeyError`` if absent."""
        return self._by_id[item_id.upper()]  # type: ignore[attr-defined]

    def get(self, item_id: str) -> Product:
        return self.products[self.index_of(item_id)]


# ----- text pools (none of them may contain an attribute phrase; the catalog test checks) ----------
_SYLLABLES_A = ("nor", "lu", "ka", "vel", "so", "bri", "ze", "mar", "to", "qui", "fen", "ha", "ori",
                "pe", "da", "mi", "ro", "sa", "te", "va", "cor", "el", "jun", "ax")
_SYLLABLES_B = ("vo", "ra", "lix", "den", "tex", "ne", "ssa", "mo", "ton", "ly", "ren", "vik", "ora",
                "bel", "quo", "nix", "dal", "sen", "ari", "ko")
_SERIES = ("aurora", "summit", "metro", "coast", "nova", "terra", "harbor", "cedar", "atlas", "vista",
           "ember", "solstice", "meridian", "willow", "apex", "drift", "haven", "orbit", "prairie",
           "tundra", "zenith", "canyon", "lagoon", "aspen", "juniper", "comet", "pioneer", "halo")
_USES = {
    "apparel": ("everyday wear", "weekend outings", "the office", "travel days", "lounging at home"),
    "footwear": ("daily walks", "long shifts", "weekend trips", "city commutes", "outdoor days"),
    "home_decor": ("the living room", "the bedroom", "a guest room", "a dorm room", "a housewarming gift"),
    "electronics": ("home office setups", "travel", "gaming sessions", "daily commutes", "the gym"),
    "accessories": ("daily use", "travel", "gifting", "work days", "weekend outings"),
    "beauty_health": ("a morning routine", "an evening routine", "travel", "daily care", "gifting"),
    "other": ("the pantry", "busy weeks", "the office", "family time", "gifting"),
}
_SUFFIXES = {
    "apparel": ("for Men", "for Women", "Unisex", "Classic Cut", "Everyday Basic", "Casual Style"),
    "footwear": ("for Men", "for Women", "Unisex", "Everyday Pair", "Outdoor Series", "Comfort Line"),
    "home_decor": ("Home Decor", "Modern Style", "Farmhouse Style", "Boho Style", "Minimalist Design"),
    "electronics": ("for Home and Office", "Gen 2", "Pro Edition", "Travel Edition", "2026 Model"),
    "accessories": ("for Men", "for Women", "Unisex", "Classic Design", "Everyday Carry"),
    "beauty_health": ("Daily Care", "Salon Formula", "Travel Friendly", "Family Size", "Gift Set"),
    "other": ("Value Size", "Family Pack", "Everyday Essentials", "Classic", "Premium Selection"),
}
_INTROS = (
    "The {series} {type} by {brand} is made for {use}.",
    "{brand} designed this {type} for {use}.",
    "Meet the {series} {type}, a {brand} favorite for {use}.",
    "This {type} from {brand} is built for {use} and easy to care for.",
    "This {type} from the {brand} {series} line fits right into {use}.",
)
_CLOSINGS = (
    "Backed by a 30 day return window.",
    "Ships in recyclable packaging.",
    "Check the size chart before ordering.",
    "Customer support answers within one business day.",
    "Pairs well with other items from the {series} line.",
    "",
)
_FEATURE_BENEFITS = (
    "tested in our lab for daily use", "a detail our customers ask for", "checked on every unit",
    "as listed on the label", "part of every {series} product", "confirmed by the manufacturer",
)
_REVIEW_GENERIC = (
    "Arrived on time and well packaged.", "Exactly what I needed for {use}.",
    "Good value for the price.", "Would buy again.", "Quality is fine but shipping was slow.",
    "Looks just like the pictures.", "Bought one for my sister too.", "Does the job.",
    "A little smaller than I expected.", "My second order from {brand}.",
)
_REVIEW_ATTRIBUTE = ("It really is {attr}, as described.", "The {attr} part is why I chose it.",
                     "Happy that it is {attr}.")
_REVIEW_OPTION = ("I ordered {value} and it matches the photos.", "Got the {value} one, no complaints.")

_ID_CHARS = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"


def _brand(rng: random.Random) -> str:
    return (rng.choice(_SYLLABLES_A) + rng.choice(_SYLLABLES_B)).capitalize()


def _price(rng: random.Random, low: float, high: float) -> float:
    return round(int(rng.uniform(low, high)) + rng.choice((0.99, 0.49, 0.95, 0.0)), 2)


def _title_case(text: str) -> str:
    return " ".join(w if w[:1].isdigit() else w[:1].upper() + w[1:] for w in text.split())


def _make_product(rng: random.Random, ptype: ProductType, brands: list[str], item_id: str) -> Product:
    brand = rng.choice(brands)
    series = rng.choice(_SERIES)
    use = rng.choice(_USES[ptype.category])
    n_attr = rng.randint(2, min(5, len(ptype.attributes)))
    attributes = tuple(sorted(rng.sample(ptype.attributes, n_attr), key=ptype.attributes.index))
    options = []
    for group, pool in ptype.options:
        k = rng.randint(min(2, len(pool)), min(6, len(pool)))
        options.append((group, tuple(sorted(rng.sample(pool, k), key=pool.index))))
    in_title = rng.sample(attributes, rng.randint(1, min(2, len(attributes))))
    title = " ".join([brand, series.capitalize(), _title_case(" ".join(in_title)),
                      _title_case(ptype.name), rng.choice(_SUFFIXES[ptype.category])])
    fill = {"brand": brand, "series": series, "type": ptype.name, "use": use}
    in_description = rng.sample(attributes, rng.randint(1, len(attributes)))
    description = " ".join(s for s in (
        rng.choice(_INTROS).format(**fill),
        "Highlights: " + ", ".join(in_description) + ".",
        rng.choice(_CLOSINGS).format(**fill),
    ) if s)
    features = tuple(f"{a}: " + rng.choice(_FEATURE_BENEFITS).format(**fill) for a in attributes)
    features += (f"category: {' > '.join(ptype.category_path)}",)
    rating = None if rng.random() < 0.15 else round(rng.uniform(3.0, 5.0), 1)
    reviews = []
    for _ in range(rng.randint(2, 4)):
        kind = rng.random()
        if kind < 0.3:
            text = rng.choice(_REVIEW_ATTRIBUTE).format(attr=rng.choice(attributes))
        elif kind < 0.5 and options:
            text = rng.choice(_REVIEW_OPTION).format(value=rng.choice(rng.choice(options)[1]))
        else:
            text = rng.choice(_REVIEW_GENERIC).format(**fill)
        reviews.append(f"{rng.randint(3, 5)} out of 5 stars. {text}")
    return Product(
        item_id=item_id, title=title, brand=brand, product_type=ptype.name, category=ptype.category,
        category_path=ptype.category_path, price=_price(rng, *ptype.price_range), rating=rating,
        attributes=attributes, options=tuple(options), description=description, features=features,
        reviews=tuple(reviews),
    )


def generate_catalog(seed: int = 0, num_products: int = 2500) -> Catalog:
    """Generate ``num_products`` products spread evenly over all product types (deterministic).

    Args:
        seed: catalog seed; the same seed and size always give the identical catalog.
        num_products: catalog size, at least one product per type (``len(PRODUCT_TYPES)``).
    """
    if num_products < len(PRODUCT_TYPES):
        raise ValueError(f"num_products must be >= {len(PRODUCT_TYPES)} (one per product type), "
                         f"got {num_products}")
    rng = random.Random(f"webshop-catalog-{seed}")
    brands = {c: sorted({_brand(rng) for _ in range(40)}) for c in CATEGORIES}
    used_ids: set[str] = set()
    products = []
    for i in range(num_products):
        ptype = PRODUCT_TYPES[i % len(PRODUCT_TYPES)]
        while True:
            item_id = "B0" + "".join(rng.choice(_ID_CHARS) for _ in range(8))
            if item_id not in used_ids:
                used_ids.add(item_id)
                break
        products.append(_make_product(rng, ptype, brands[ptype.category], item_id))
    # Shuffle so neighbouring ids are unrelated, as in a real store.
    rng.shuffle(products)
    return Catalog(seed=seed, products=tuple(products))


@lru_cache(maxsize=4)
def load_catalog(seed: int = 0, num_products: int = 2500) -> Catalog:
    """``generate_catalog`` cached per process (generation takes a fraction of a second)."""
    return generate_catalog(seed, num_products)
