"""Answer scoring for Search-QA: normalised exact match (the reward) and token F1 (reported).

The normalisation is the one of SQuAD that Search-R1 uses for its reward: lower-case, drop
punctuation, drop the articles "a", "an", "the" as whole words, collapse whitespace. A prediction
is scored against every golden answer and the best score counts.
"""

from __future__ import annotations

import re
import string
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

_DROP_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NON_WORD = re.compile(r"[^\w]|_")


def normalize_answer(text: str) -> str:
    """Lower-case, strip punctuation and articles, collapse whitespace.

    >>> normalize_answer("The  Eiffel-Tower!")
    'eiffeltower'
    """
    text = text.lower()
    text = text.translate(_DROP_PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _as_list(golden_answers: str | Sequence[str]) -> list[str]:
    if isinstance(golden_answers, str):
        return [golden_answers]
    answers = list(golden_answers)
    if not answers:
        raise ValueError("golden_answers is empty: a question needs at least one accepted answer")
    return answers


def exact_match(prediction: str, golden_answers: str | Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised golden answer, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in _as_list(golden_answers)))


def f1_score(prediction: str, golden_answers: str | Sequence[str]) -> float:
    """Best token-level F1 (bag of normalised words) between the prediction and a golden answer.

    An empty normalised prediction or answer scores 0 unless both are empty.
    """
    pred_tokens = normalize_answer(prediction).split()
    best = 0.0
    for golden in _as_list(golden_answers):
        gold_tokens = normalize_answer(golden).split()
        if not pred_tokens or not gold_tokens:
            best = max(best, float(pred_tokens == gold_tokens))
            continue
        common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
        if common == 0:
            continue
        precision = common / len(pred_tokens)
        recall = common / len(gold_tokens)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


def answer_in_text(answer: str, text: str) -> bool:
    """Whether the normalised ``answer`` occurs in the normalised ``text`` on word boundaries.

    Used to check that a built question is supported by its passage.
    """
    needle = normalize_words(answer)
    if not needle:
        return False
    return f" {needle} " in f" {normalize_words(text)} "


def normalize_words(text: str) -> str:
    """``normalize_answer``, and any other non-alphanumeric character (en dash, curly quote) also
    separates words, so that "1926" is found in "(1926–2017)"."""
    return " ".join(_NON_WORD.sub(" ", normalize_answer(text)).split())


def mean_by_data_source(
    rows: Iterable[Mapping[str, object]], keys: Sequence[str] = ("em", "f1")
) -> dict[str, dict[str, float]]:
    """Average ``keys`` per ``data_source`` as Search-R1 reports its seven test sets.

    Args:
        rows: one mapping per question with ``data_source`` and the numeric ``keys``.
    Returns:
        ``{data_source: {key: mean, "count": n}}`` plus ``"average"``: the unweighted mean over
        data sources (the paper's "Avg." column) and ``"all"``: the mean over all questions.
    """
    groups: dict[str, list[Mapping[str, object]]] = defaultdict(list)
    for row in rows:
        groups[str(row["data_source"])].append(row)
    if not groups:
        return {}
    out: dict[str, dict[str, float]] = {}
    for source in sorted(groups):
        group = groups[source]
        out[source] = {k: sum(float(r[k]) for r in group) / len(group) for k in keys}
        out[source]["count"] = float(len(group))
    per_source = [out[s] for s in sorted(groups)]
    out["average"] = {k: sum(s[k] for s in per_source) / len(per_source) for k in keys}
    out["average"]["count"] = float(len(per_source))
    everything = [r for g in groups.values() for r in g]
    out["all"] = {k: sum(float(r[k]) for r in everything) / len(everything) for k in keys}
    out["all"]["count"] = float(len(everything))
    return out


__all__ = [
    "answer_in_text",
    "exact_match",
    "f1_score",
    "mean_by_data_source",
    "normalize_answer",
    "normalize_words",
]
