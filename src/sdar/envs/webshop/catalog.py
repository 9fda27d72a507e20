"""The generated product catalog of the offline WebShop.

The real WebShop sells 1.18 M scraped Amazon products that cannot be downloaded on offline machines,
so this module writes a catalog of its own with the same shape: every product has an item id in
Amazon's style (``B0...``), a title, a category path, a price, a rating, attributes (the phrases
instructions ask for: "machine washable", "long-lasting"), option groups (size, color, ...) and
description / features / reviews text.

Generation is deterministic per ``seed`` and takes well under a second, so the catalog is rebuilt in
process on first use and cached per process (``load_catalog``); nothing is written to disk.

Honesty of the text, which the exact scoring rule relies on: a product's text states exactly the attributes in
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


_POOLS: dict[str, tuple[str, ...]] = {
    "size": SIZE,
    "shoe_size": SHOE_SIZE,
    "jeans_size": JEANS_SIZE,
    "color_wear": COLOR_WEAR,
    "color_home": COLOR_HOME,
    "color_tech": COLOR_TECH,
    "color_acc": COLOR_ACC,
    "lip_color": LIP_COLOR,
    "metal": METAL,
    "fl_oz": FL_OZ,
    "pack": PACK,
    "scent": SCENT,
    "pillow_size": PILLOW_SIZE,
    "curtain_length": CURTAIN_LENGTH,
    "rug_size": RUG_SIZE,
    "art_size": ART_SIZE,
    "blanket_size": BLANKET_SIZE,
    "bed_size": BED_SIZE,
    "plant_height": PLANT_HEIGHT,
    "cable_length": CABLE_LENGTH,
    "wattage": WATTAGE,
    "switch": SWITCH,
    "mah": MAH,
    "storage": STORAGE,
    "band_size": BAND_SIZE,
    "phone_size": PHONE_SIZE,
    "belt_size": BELT_SIZE,
    "count": COUNT,
    "tea_count": TEA_COUNT,
    "grocery_size": GROCERY_SIZE,
    "litter_size": LITTER_SIZE,
    "pet_size": PET_SIZE,
    "coffee_flavor": COFFEE_FLAVOR,
    "tea_flavor": TEA_FLAVOR,
    "bar_flavor": BAR_FLAVOR,
    "gummy_flavor": GUMMY_FLAVOR,
    "dog_flavor": DOG_FLAVOR,
    "block_pieces": BLOCK_PIECES,
}


# One product type per record: a header line
#     name | category key | subcategory | price range in dollars | option groups as group=pool
# and indented lines listing the attribute phrases its products may have.
_PRODUCT_TYPE_TABLE = """
# apparel
t-shirt | apparel | tops | 8-30 | size=size color=color_wear
    machine washable, short sleeve, crew neck, moisture wicking, relaxed fit, tagless, pre-shrunk,
    organic cotton
hoodie | apparel | tops | 20-60 | size=size color=color_wear
    machine washable, fleece lined, kangaroo pocket, drawstring hood, relaxed fit, heavyweight,
    zip up
polo shirt | apparel | tops | 15-45 | size=size color=color_wear
    short sleeve, moisture wicking, wrinkle free, slim fit, machine washable, button placket,
    uv protection
sweater | apparel | tops | 25-80 | size=size color=color_wear
    cable knit, crew neck, wool blend, relaxed fit, turtleneck, ribbed cuffs, hand wash only
jeans | apparel | bottoms | 25-70 | size=jeans_size color=color_wear
    slim fit, stretch denim, high waist, button closure, relaxed fit, machine washable, distressed,
    straight leg
leggings | apparel | activewear | 12-40 | size=size color=color_wear
    high waist, squat proof, moisture wicking, four-way stretch, side pockets, tummy control,
    ankle length
athletic shorts | apparel | activewear | 10-35 | size=size color=color_wear
    quick dry, elastic waist, zip pockets, built-in liner, drawstring waist, reflective details
summer dress | apparel | dresses | 20-65 | size=size color=color_wear
    sleeveless, v-neck, midi length, floral print, with pockets, machine washable, smocked waist,
    adjustable straps
winter jacket | apparel | outerwear | 40-160 | size=size color=color_wear
    water resistant, windproof, insulated, detachable hood, zip pockets, packable, fleece lined
pajama set | apparel | sleepwear | 18-50 | size=size color=color_wear
    button down, elastic waist, long sleeve, machine washable, short sleeve, tagless, satin finish
crew socks | apparel | socks | 8-30 | size=size pack=pack
    cushioned sole, moisture wicking, arch support, reinforced heel, odor control, seamless toe
# footwear
running shoes | footwear | athletic | 35-140 | size=shoe_size color=color_wear
    breathable mesh, lightweight, cushioned sole, non-slip, arch support, wide toe box,
    reflective details
sneakers | footwear | casual | 25-90 | size=shoe_size color=color_wear
    canvas upper, lace-up, rubber sole, memory foam insole, slip-on, lightweight, low top
hiking boots | footwear | boots | 50-180 | size=shoe_size color=color_wear
    waterproof, ankle support, slip resistant, lug sole, lightweight, insulated, breathable mesh
work boots | footwear | boots | 60-200 | size=shoe_size color=color_wear
    steel toe, waterproof, slip resistant, oil resistant, electrical hazard rated,
    cushioned insole
rain boots | footwear | boots | 25-80 | size=shoe_size color=color_wear
    waterproof, pull-on, mid calf, non-slip, removable insole, easy to clean
sandals | footwear | sandals | 15-70 | size=shoe_size color=color_wear
    adjustable strap, arch support, open toe, quick dry, non-slip, cushioned footbed
flip flops | footwear | sandals | 8-35 | size=shoe_size color=color_wear
    quick dry, arch support, waterproof, lightweight, textured footbed
slippers | footwear | indoor | 12-45 | size=shoe_size color=color_wear
    memory foam, faux fur lining, non-slip, indoor outdoor, machine washable, closed back
loafers | footwear | casual | 35-120 | size=shoe_size color=color_wear
    leather upper, slip-on, cushioned insole, lightweight, rubber sole, penny strap
heeled pumps | footwear | dress | 30-110 | size=shoe_size color=color_wear
    pointed toe, ankle strap, block heel, cushioned insole, patent leather, slip resistant
# home decor
throw pillow covers | home_decor | decorative pillows | 10-35 | size=pillow_size color=color_home
    hidden zipper, machine washable, velvet, double sided, set of 2, fade resistant
blackout curtains | home_decor | window treatments | 18-70 | length=curtain_length color=color_home
    thermal insulated, noise reducing, grommet top, machine washable, energy saving, set of 2
area rug | home_decor | rugs | 30-250 | size=rug_size color=color_home
    non-shedding, low pile, stain resistant, non-slip backing, machine washable, pet friendly
table lamp | home_decor | lighting | 20-90 | color=color_home
    dimmable, usb port, touch control, fabric shade, bulb included, 3-way switch
canvas wall art | home_decor | wall decor | 20-120 | size=art_size
    framed, ready to hang, fade resistant, gallery wrapped, set of 3
wall mirror | home_decor | wall decor | 25-150 | size=art_size color=color_home
    shatterproof, ready to hang, beveled edge, metal frame, round shape
scented candles | home_decor | candles | 10-45 | scent=scent pack=pack
    long-lasting, soy wax, lead-free wick, hand poured, gift ready
throw blanket | home_decor | bedding | 15-60 | size=blanket_size color=color_home
    fleece, machine washable, reversible, fade resistant, sherpa lined, fringe edges
duvet cover set | home_decor | bedding | 30-120 | size=bed_size color=color_home
    machine washable, button closure, wrinkle resistant, corner ties, 100% cotton, hypoallergenic
artificial plant | home_decor | decor accents | 15-90 | height=plant_height
    realistic, uv resistant, potted, no maintenance, weighted base
flower vase | home_decor | decor accents | 12-60 | color=color_home
    handmade, ceramic, waterproof, glazed finish, set of 3
# electronics
wireless earbuds | electronics | audio | 20-150 | color=color_tech
    noise cancelling, bluetooth 5.3, waterproof, long battery life, charging case, touch control
over ear headphones | electronics | audio | 30-250 | color=color_tech
    noise cancelling, foldable, long battery life, memory foam ear cups, built-in microphone,
    bluetooth 5.3
bluetooth speaker | electronics | audio | 20-130 | color=color_tech
    waterproof, portable, long battery life, built-in microphone, stereo pairing, dustproof
usb c wall charger | electronics | chargers | 10-60 | wattage=wattage color=color_tech
    fast charging, foldable plug, dual port, compact, overheat protection
charging cable | electronics | cables | 6-25 | length=cable_length pack=pack
    braided, fast charging, tangle free, data sync, reinforced connectors
hdmi cable | electronics | cables | 6-35 | length=cable_length pack=pack
    4k, high speed, gold plated, braided, ethernet support
wireless mouse | electronics | computer accessories | 10-60 | color=color_tech
    ergonomic, silent click, rechargeable, adjustable dpi, usb receiver
mechanical keyboard | electronics | computer accessories | 40-160 | switch=switch color=color_tech
    backlit, hot swappable, wireless, compact layout, detachable cable
power bank | electronics | chargers | 15-70 | capacity=mah color=color_tech
    fast charging, compact, usb c, led display, dual port, overheat protection
webcam | electronics | computer accessories | 25-110 | color=color_tech
    1080p, built-in microphone, auto focus, privacy cover, plug and play, wide angle
smart plug | electronics | smart home | 10-45 | pack=pack
    voice control, energy monitoring, no hub required, compact, scheduling
microsd card | electronics | storage | 8-90 | capacity=storage
    high speed, with adapter, 4k video, shock proof, waterproof
# accessories
leather wallet | accessories | wallets | 15-70 | color=color_acc
    rfid blocking, genuine leather, slim, bifold, gift box, coin pocket
sunglasses | accessories | eyewear | 12-120 | color=color_acc
    polarized, uv protection, lightweight frame, scratch resistant, includes case
backpack | accessories | bags | 20-90 | color=color_acc
    water resistant, laptop compartment, usb charging port, anti theft, padded straps
tote bag | accessories | bags | 15-80 | color=color_acc
    large capacity, zipper closure, inner pocket, water resistant, vegan leather
leather belt | accessories | belts | 12-50 | size=belt_size color=color_acc
    genuine leather, adjustable, reversible, alloy buckle, gift box
watch band | accessories | watch accessories | 8-40 | size=band_size color=color_acc
    quick release, adjustable, sweat resistant, silicone, stainless steel
phone case | accessories | phone accessories | 8-40 | size=phone_size color=color_acc
    shockproof, slim, wireless charging compatible, raised edges, card holder
baseball cap | accessories | hats | 10-35 | color=color_acc
    adjustable strap, breathable, uv protection, embroidered logo, structured crown
winter scarf | accessories | scarves | 10-45 | color=color_acc
    oversized, tassel trim, warm knit, machine washable, cashmere feel
travel umbrella | accessories | umbrellas | 12-45 | color=color_acc
    windproof, auto open close, compact, uv protection, ergonomic handle
hoop earrings | accessories | jewelry | 10-60 | color=metal
    hypoallergenic, 14k gold plated, lightweight, nickel free, gift box
# beauty and health
shampoo | beauty_health | hair care | 7-35 | size=fl_oz pack=pack
    sulfate free, paraben free, color safe, for dry hair, cruelty free, vegan
face serum | beauty_health | skin care | 10-60 | size=fl_oz
    vitamin c, hyaluronic acid, fragrance free, non-comedogenic, cruelty free,
    dermatologist tested
lipstick | beauty_health | makeup | 6-35 | color=lip_color
    long-lasting, matte finish, moisturizing, cruelty free, vegan, transfer proof
nail polish | beauty_health | makeup | 5-25 | color=lip_color pack=pack
    quick dry, chip resistant, long-lasting, non-toxic, high shine
sunscreen | beauty_health | skin care | 8-35 | size=fl_oz pack=pack
    spf 50, water resistant, reef safe, oil free, broad spectrum, fragrance free
body lotion | beauty_health | skin care | 6-30 | size=fl_oz scent=scent
    fragrance free, non-greasy, shea butter, for sensitive skin, paraben free
electric toothbrush | beauty_health | oral care | 20-120 | color=color_tech
    rechargeable, 2 minute timer, pressure sensor, travel case, replacement heads included
hair dryer | beauty_health | hair care | 20-120 | color=color_tech
    ionic, lightweight, fast drying, diffuser attachment, foldable handle, low noise
multivitamin gummies | beauty_health | supplements | 8-40 | count=count flavor=gummy_flavor
    gluten free, non-gmo, sugar free, vegan, third party tested
deodorant | beauty_health | personal care | 5-25 | scent=scent pack=pack
    aluminum free, long-lasting, baking soda free, cruelty free, travel size
# other
ground coffee | other | grocery | 7-30 | size=grocery_size flavor=coffee_flavor
    organic, fair trade, medium roast, dark roast, kosher, resealable bag
herbal tea | other | grocery | 4-20 | flavor=tea_flavor count=tea_count
    caffeine free, organic, non-gmo, individually wrapped, kosher
protein bars | other | grocery | 10-45 | flavor=bar_flavor pack=pack
    gluten free, high protein, low sugar, non-gmo, keto friendly, individually wrapped
mixed nuts | other | grocery | 6-30 | size=grocery_size
    unsalted, roasted, resealable bag, kosher, non-gmo
olive oil | other | grocery | 8-45 | size=grocery_size pack=pack
    extra virgin, cold pressed, non-gmo, glass bottle, kosher
dog treats | other | pet supplies | 6-35 | flavor=dog_flavor size=pet_size
    grain free, natural ingredients, made in usa, soft chew, high protein
cat litter | other | pet supplies | 8-40 | size=litter_size
    clumping, low dust, odor control, unscented, lightweight
spiral notebook | other | office supplies | 4-25 | color=color_acc pack=pack
    college ruled, acid free paper, perforated pages, hardcover, lay flat
gel pens | other | office supplies | 5-25 | pack=pack
    quick dry, fine point, smudge proof, retractable, refillable
building blocks | other | toys | 12-80 | pieces=block_pieces
    bpa free, educational, storage box included, compatible with major brands
yoga mat | other | fitness | 15-70 | color=color_home
    non-slip, extra thick, eco friendly, carrying strap, alignment lines
"""


def _parse_product_types(table: str) -> tuple[ProductType, ...]:
    types: list[ProductType] = []
    header, attributes = None, []
    for line in [*table.splitlines(), ""]:
        if line.startswith("    "):
            attributes += [a.strip() for a in line.split(",") if a.strip()]
            continue
        if header is not None:
            name, category, subcategory, prices, options = (f.strip() for f in header.split("|"))
            low, high = (float(x) for x in prices.split("-"))
            groups = tuple((g, _POOLS[pool]) for g, pool in (o.split("=") for o in options.split()))
            types.append(
                ProductType(name, category, subcategory, tuple(attributes), groups, (low, high))
            )
            header, attributes = None, []
        if line.strip() and not line.startswith("#"):
            header = line
    return tuple(types)


PRODUCT_TYPES: tuple[ProductType, ...] = _parse_product_types(_PRODUCT_TYPE_TABLE)
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
        return " ".join(
            (self.title, " ".join(self.category_path), " ".join(self.features), self.description)
        )


@dataclass(frozen=True)
class Catalog:
    """All products of one catalog, in generation (or file) order; ``seed`` is -1 for a catalog
    read from files."""

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


# ----- text pools (none may contain an attribute phrase; tests/test_webshop_catalog.py checks)
_SYLLABLES_A = ("nor", "lu", "ka", "vel", "so", "bri", "ze", "mar", "to", "qui", "fen", "ha", "ori",
                "pe", "da", "mi", "ro", "sa", "te", "va", "cor", "el", "jun", "ax")
_SYLLABLES_B = ("vo", "ra", "lix", "den", "tex", "ne", "ssa", "mo", "ton", "ly", "ren", "vik",
                "ora", "bel", "quo", "nix", "dal", "sen", "ari", "ko")
_SERIES = ("aurora", "summit", "metro", "coast", "nova", "terra", "harbor", "cedar", "atlas",
           "vista", "ember", "solstice", "meridian", "willow", "apex", "drift", "haven", "orbit",
           "prairie", "tundra", "zenith", "canyon", "lagoon", "aspen", "juniper", "comet",
           "pioneer", "halo")
_USES = {
    "apparel": ("everyday wear", "weekend outings", "the office", "travel days",
                "lounging at home"),
    "footwear": ("daily walks", "long shifts", "weekend trips", "city commutes", "outdoor days"),
    "home_decor": ("the living room", "the bedroom", "a guest room", "a dorm room",
                   "a housewarming gift"),
    "electronics": ("home office setups", "travel", "gaming sessions", "daily commutes", "the gym"),
    "accessories": ("daily use", "travel", "gifting", "work days", "weekend outings"),
    "beauty_health": ("a morning routine", "an evening routine", "travel", "daily care", "gifting"),
    "other": ("the pantry", "busy weeks", "the office", "family time", "gifting"),
}
_SUFFIXES = {
    "apparel": ("for Men", "for Women", "Unisex", "Classic Cut", "Everyday Basic", "Casual Style"),
    "footwear": ("for Men", "for Women", "Unisex", "Everyday Pair", "Outdoor Series",
                 "Comfort Line"),
    "home_decor": ("Home Decor", "Modern Style", "Farmhouse Style", "Boho Style",
                   "Minimalist Design"),
    "electronics": ("for Home and Office", "Gen 2", "Pro Edition", "Travel Edition", "2026 Model"),
    "accessories": ("for Men", "for Women", "Unisex", "Classic Design", "Everyday Carry"),
    "beauty_health": ("Daily Care", "Salon Formula", "Travel Friendly", "Family Size", "Gift Set"),
    "other": ("Value Size", "Family Pack", "Everyday Essentials", "Classic", "Premium Selection"),
}
_INTROS = ("The {series} {type} by {brand} is made for {use}.",
           "{brand} designed this {type} for {use}.",
           "Meet the {series} {type}, a {brand} favorite for {use}.",
           "This {type} from {brand} is built for {use} and easy to care for.",
           "This {type} from the {brand} {series} line fits right into {use}.")
_CLOSINGS = ("Backed by a 30 day return window.", "Ships in recyclable packaging.",
             "Check the size chart before ordering.",
             "Customer support answers within one business day.",
             "Pairs well with other items from the {series} line.", "")
_FEATURE_BENEFITS = ("tested in our lab for daily use", "a detail our customers ask for",
                     "checked on every unit", "as listed on the label",
                     "part of every {series} product", "confirmed by the manufacturer")
_REVIEW_GENERIC = ("Arrived on time and well packaged.", "Exactly what I needed for {use}.",
                   "Good value for the price.", "Would buy again.",
                   "Quality is fine but shipping was slow.", "Looks just like the pictures.",
                   "Bought one for my sister too.", "Does the job.",
                   "A little smaller than I expected.", "My second order from {brand}.")
_REVIEW_ATTRIBUTE = ("It really is {attr}, as described.", "The {attr} part is why I chose it.",
                     "Happy that it is {attr}.")
_REVIEW_OPTION = ("I ordered {value} and it matches the photos.",
                  "Got the {value} one, no complaints.")

_ID_CHARS = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"


def _brand(rng: random.Random) -> str:
    return (rng.choice(_SYLLABLES_A) + rng.choice(_SYLLABLES_B)).capitalize()


def _price(rng: random.Random, low: float, high: float) -> float:
    return round(int(rng.uniform(low, high)) + rng.choice((0.99, 0.49, 0.95, 0.0)), 2)


def _title_case(text: str) -> str:
    return " ".join(w if w[:1].isdigit() else w[:1].upper() + w[1:] for w in text.split())


def _make_product(
    rng: random.Random, ptype: ProductType, brands: list[str], item_id: str
) -> Product:
    brand = rng.choice(brands)
    series = rng.choice(_SERIES)
    use = rng.choice(_USES[ptype.category])
    n_attr = rng.randint(2, min(5, len(ptype.attributes)))
    attributes = tuple(sorted(rng.sample(ptype.attributes, n_attr), key=ptype.attributes.index))
    options = []
    for group, pool in ptype.options:
        k = rng.randint(min(2, len(pool)), min(4, len(pool)))
        options.append((group, tuple(sorted(rng.sample(pool, k), key=pool.index))))
    in_title = rng.sample(attributes, rng.randint(1, min(2, len(attributes))))
    title = " ".join(
        [
            brand,
            series.capitalize(),
            _title_case(" ".join(in_title)),
            _title_case(ptype.name),
            rng.choice(_SUFFIXES[ptype.category]),
        ]
    )
    fill = {"brand": brand, "series": series, "type": ptype.name, "use": use}
    in_description = rng.sample(attributes, rng.randint(1, len(attributes)))
    description = " ".join(
        s
        for s in (
            rng.choice(_INTROS).format(**fill),
            "Highlights: " + ", ".join(in_description) + ".",
            rng.choice(_CLOSINGS).format(**fill),
        )
        if s
    )
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
        item_id=item_id,
        title=title,
        brand=brand,
        product_type=ptype.name,
        category=ptype.category,
        category_path=ptype.category_path,
        price=_price(rng, *ptype.price_range),
        rating=rating,
        attributes=attributes,
        options=tuple(options),
        description=description,
        features=features,
        reviews=tuple(reviews),
    )


DEFAULT_NUM_PRODUCTS = 2500


def generate_catalog(seed: int = 0, num_products: int = DEFAULT_NUM_PRODUCTS) -> Catalog:
    """Generate ``num_products`` products spread evenly over all product types (deterministic).

    Args:
        seed: catalog seed; the same seed and size always give the identical catalog.
        num_products: catalog size, at least one product per type (``len(PRODUCT_TYPES)``).
    """
    if num_products < len(PRODUCT_TYPES):
        raise ValueError(
            f"num_products must be >= {len(PRODUCT_TYPES)} (one per product type), "
            f"got {num_products}"
        )
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
def load_catalog(seed: int = 0, num_products: int = DEFAULT_NUM_PRODUCTS) -> Catalog:
    """``generate_catalog`` cached per process (generation takes a fraction of a second)."""
    return generate_catalog(seed, num_products)
