"""Skill routing as the authors' released code does it (``routing: released``), onto this project's
skill files.

Described in docs/algorithm.md, "Skills and routing". The released code (ZJU-REAL/SDAR,
``SkillProvider`` in ``verl/trainer/ppo/rlsd_utils.py`` with ``skills/<env>/skill_mapping.json``)
routes in two ways:

* **Students that see skills** (Skill-GRPO training, Skill-Prompt and with-skill validation): at
  every step, keyword substring matching over the observation text, i.e. the user message with
  its history and admissible actions (``route_observation``). Every task type with any keyword in
  the lower-cased text adds its file, in the mapping's order; two task types that share a file add
  it twice (an ALFWorld text with "put two" carries the pick-and-place file twice). Search has no
  keywords: general skills only.
* **The teacher** (``route_teacher``): ALFWorld by the game's task type, ``pick_two_obj_and_place``
  to the pick-and-place file; Search by ``data_source`` (popqa -> attribute, nq / triviaqa ->
  lookup, hotpotqa -> two_hop; otherwise "which" and "or" without "for" anywhere in the prompt ->
  comparison, else 2wikimultihopqa / musique / bamboogle -> two_hop, anything else general only);
  WebShop by the same comparison test (which, with no comparison file, gives the general skills
  only) and else keyword substring matching over the whole chat-rendered prompt (task, history,
  page, admissible actions, chat template).

Substring matching is loose on purpose here, because the released code is: WebShop's "hat"
occurs in "that" and "what", "heel" in "wheel", "bag" in "teabags". This project's own routing
(``routing: task_type``, ``TaskInfo.skill_keys``) routes once per task, by whole words.
"""

from __future__ import annotations

from sdar.envs.base import TaskInfo

ROUTINGS = ("task_type", "released")
RELEASED_ENVS = ("alfworld", "webshop", "search")

# The released task_keywords, in the mapping's order, each with the file (this project's key) its
# task type reads. ALFWorld: look_at_obj_in_light, heat, cool, clean, pick_two_obj_and_place,
# pick_and_place; WebShop: the seven categories (other has no keywords).
OBSERVATION_KEYWORDS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "alfworld": (
        ("look", ("look at", "light")),
        ("heat", ("heat",)),
        ("cool", ("cool",)),
        ("clean", ("clean",)),
        ("pick", ("put two",)),
        ("pick", ("put",)),
    ),
    "webshop": (
        ("apparel", ("shirt", "dress", "pants", "jacket", "sweater", "blouse", "skirt", "coat",
                     "jeans", "shorts")),
        ("footwear", ("shoe", "boot", "sneaker", "sandal", "slipper", "loafer", "heel")),
        ("home_decor", ("pillow", "rug", "curtain", "lamp", "vase", "frame", "candle", "decor")),
        ("electronics", ("phone", "charger", "cable", "speaker", "headphone", "battery", "adapter",
                         "usb")),
        ("accessories", ("bag", "wallet", "belt", "watch", "sunglasses", "hat", "scarf", "glove")),
        ("beauty_health", ("shampoo", "cream", "lotion", "makeup", "brush", "serum", "moisturizer",
                           "soap")),
    ),
    "search": (),
}

# The teacher's ALFWorld rule: task type -> file (the released mapping sends pick_two to the
# pick-and-place file; this project ships a pick_two file of its own for task_type routing).
ALFWORLD_TASK_FILES = {
    "pick_and_place_simple": "pick",
    "pick_two_obj_and_place": "pick",
    "look_at_obj_in_light": "look",
    "pick_heat_then_place_in_recep": "heat",
    "pick_cool_then_place_in_recep": "cool",
    "pick_clean_then_place_in_recep": "clean",
}
SEARCH_SOURCE_FILES = {"popqa": "attribute", "nq": "lookup", "triviaqa": "lookup", "hotpotqa": "two_hop"}
SEARCH_MULTI_HOP_SOURCES = ("2wikimultihopqa", "musique", "bamboogle")


def check_released_env(env_name: str) -> None:
    """Raise a one-line error when the released code has no routing for ``env_name``."""
    if env_name not in RELEASED_ENVS:
        raise ValueError(f"teacher.routing=released is defined for {', '.join(RELEASED_ENVS)}, "
                         f"not {env_name!r}; use teacher.routing=task_type")


def route_observation(env_name: str, text: str) -> tuple[str, ...]:
    """The released student routing: one key per task type with a keyword in ``text`` (lower-cased,
    substring), in the mapping's order, repeats kept; ``()`` means general skills only."""
    check_released_env(env_name)
    lowered = text.lower()
    return tuple(key for key, words in OBSERVATION_KEYWORDS[env_name] if any(w in lowered for w in words))


def _looks_like_comparison(prompt_text: str) -> bool:
    """The released comparison test over the whole prompt: "which" and "or" and no "for"
    (substrings, so "for" in "format" or "information" rules it out)."""
    t = prompt_text.lower()
    return "which" in t and "or" in t and "for" not in t


def route_teacher(env_name: str, task: TaskInfo, prompt_text: str) -> tuple[str, ...]:
    """The released teacher routing for ``task`` whose chat-rendered student prompt is
    ``prompt_text`` (module docstring); ``()`` means general skills only."""
    check_released_env(env_name)
    if env_name == "alfworld":
        key = ALFWORLD_TASK_FILES.get(task.task_type)
        return (key,) if key else ()
    comparison = _looks_like_comparison(prompt_text)
    if env_name == "search":
        source = task.task_type.lower()
        if source in SEARCH_SOURCE_FILES:
            return (SEARCH_SOURCE_FILES[source],)
        if comparison:
            return ("comparison",)
        return ("two_hop",) if source in SEARCH_MULTI_HOP_SOURCES else ()
    # webshop: the released comparison branch maps to no WebShop file (general skills only)
    return () if comparison else route_observation(env_name, prompt_text)
