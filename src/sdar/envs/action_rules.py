"""Which reply counts as a valid action: this project's rule or the released code's.

``env.action_rule`` picks one per run (docs/algorithm.md, "Departures from the released code"):

``project`` (this project's default)
    The action is the *last* complete tag (models quote the format while reasoning first);
    ``<think>`` is not required; a reply the environment refuses (an ALFWorld command that is not
    admissible, an unavailable WebShop click, a Search reply without results) is invalid. Search
    ignores tags inside ``<think>`` and refuses an empty tag.

``released`` (the SDAR authors' code, ``agent_system/environments/env_package/*/projection.py``)
    ALFWorld and WebShop (:func:`released_tag_action`): the reply is lower-cased, the action is the
    text between the *first* ``<action>`` and the *first* ``</action>``; the reply is valid when
    both tags are found, ``<think>`` and ``</think>`` both occur in it, and it holds no CJK
    ideograph (U+4E00..U+9FFF). Admissibility plays no part: the environment answers whatever
    command it gets. Search (:func:`released_search_action`): the reply is cut after its first
    ``</search>`` (else its first ``</answer>``) and the action is the first ``<search>`` block
    of the cut text, else its first ``<answer>`` block; the reply is invalid when it has no such
    block, opens both tags, or opens one of them twice, counting tags anywhere (inside
    ``<think>`` too). An empty tag is accepted. Only this verdict counts (the environment's own
    is not consulted), and the environment acts on the extracted action even when it is invalid.

Both rules keep the sampled response ids as the training target: the cut of the Search rule
only chooses what the environment acts on, as in the released SDAR code (which trains on the
whole generated response). Search-R1's own trainer instead re-tokenises the cut text and trains
on that; this project does not (docs/environments/search.md, "Invalid replies").
"""

from __future__ import annotations

import re

from sdar.envs.base import ParsedAction

ACTION_RULES = ("project", "released")
"""The values of ``env.action_rule``."""

CJK_IDEOGRAPH = re.compile(r"[\u4e00-\u9fff]")
"""What the released ALFWorld/WebShop projections reject: CJK Unified Ideographs only (kana,
Hangul and the extension blocks pass)."""

# The released projections hand the environment the reply's tail when no action tag is found.
ALFWORLD_TAIL_CHARS = 30
WEBSHOP_TAIL_CHARS = 20

_SEARCH_BLOCK = re.compile(r"<search>(.*?)</search>", re.IGNORECASE | re.DOTALL)
_ANSWER_BLOCK = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_SEARCH_OPEN = re.compile(r"<search>", re.IGNORECASE)
_ANSWER_OPEN = re.compile(r"<answer>", re.IGNORECASE)


def check_action_rule(rule: str) -> str:
    """``rule`` if it is one of ``ACTION_RULES``; else a one-line ``ValueError``."""
    if rule not in ACTION_RULES:
        raise ValueError(f"unknown action rule {rule!r}; known: {list(ACTION_RULES)}")
    return rule


def released_tag_action(response: str, tail_chars: int) -> ParsedAction:
    """The released ALFWorld / WebShop projection of one reply.

    Returns the lower-cased, stripped text between the first ``<action>`` and the first
    ``</action>`` (``""`` when the closing tag comes first, which the released code still counts
    as valid) with ``format_ok`` = both tags found, ``<think>`` and ``</think>`` present
    (case-sensitive, anywhere) and no CJK ideograph. Without both action tags the action is the
    last ``tail_chars`` characters of the lower-cased reply (what the released code sends to the
    environment) and ``format_ok`` is False.
    """
    lowered = response.lower()
    start, end = lowered.find("<action>"), lowered.find("</action>")
    if start < 0 or end < 0:
        return ParsedAction(action=lowered[-tail_chars:], format_ok=False)
    action = lowered[start + len("<action>") : end].strip()
    ok = "<think>" in response and "</think>" in response and not CJK_IDEOGRAPH.search(response)
    return ParsedAction(action=action, format_ok=ok)


def cut_search_reply(response: str) -> str:
    """The reply up to and including its first ``</search>``, else its first ``</answer>``
    (case-sensitive, as released and as Search-R1's rollout); unchanged when it has neither."""
    for close in ("</search>", "</answer>"):
        if close in response:
            return response.split(close, 1)[0] + close
    return response


def released_search_action(response: str) -> tuple[str | None, str, bool]:
    """The released Search projection of one reply: ``(kind, text, valid)``.

    ``kind`` is ``"search"`` or ``"answer"`` for the first block found in the cut reply
    (:func:`cut_search_reply`; ``<search>`` blocks are looked for first, tags case-insensitive),
    ``None`` when there is none; ``text`` is the block's stripped content (may be empty).
    ``valid`` is False without a block, or when the *whole* reply opens both tags or one tag
    twice (tags inside ``<think>`` count).
    """
    cut = cut_search_reply(response)
    kind, text = None, ""
    for name, block in (("search", _SEARCH_BLOCK), ("answer", _ANSWER_BLOCK)):
        match = block.search(cut)
        if match:
            kind, text = name, match.group(1).strip()
            break
    n_search, n_answer = len(_SEARCH_OPEN.findall(response)), len(_ANSWER_OPEN.findall(response))
    valid = kind is not None and not (n_search and n_answer) and n_search <= 1 and n_answer <= 1
    return kind, text, valid
