"""Search-QA answer scoring: normalised exact match and token F1 against hand-computed values."""

from __future__ import annotations

import pytest

from sdar.envs.search.metrics import (
    answer_in_text,
    exact_match,
    f1_score,
    mean_by_data_source,
    normalize_answer,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The Eiffel Tower", "eiffel tower"),
        ("  an   Apple, a day!  ", "apple day"),
        ("U.S.A.", "usa"),
        ("Theater", "theater"),  # "the" inside a word stays
        ("", ""),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match_ignores_case_punctuation_and_articles():
    assert exact_match("the beatles", ["The Beatles"]) == 1.0
    assert exact_match("Beatles!", ["The Beatles"]) == 1.0
    assert exact_match("A Tale of Two Cities", ["tale of two cities"]) == 1.0
    assert exact_match("Beatles band", ["The Beatles"]) == 0.0
    assert exact_match("1926", "1926") == 1.0
    assert exact_match("1926.", ["1927"]) == 0.0


def test_exact_match_any_of_several_golden_answers():
    golden = ["San José, Costa Rica", "San José"]
    assert exact_match("san jose", golden) == 0.0  # accents are not stripped
    assert exact_match("San José", golden) == 1.0
    assert exact_match("San José Costa Rica", golden) == 1.0


def test_f1_hand_computed():
    # prediction tokens: barack obama president (3); golden: barack obama (2); common 2
    # precision 2/3, recall 1 -> F1 = 2 * (2/3) / (5/3) = 0.8
    assert f1_score("Barack Obama, president", ["Barack Obama"]) == pytest.approx(0.8)
    # best over golden answers: "obama" vs ["Barack Obama", "Obama"] -> 1.0 on the second
    assert f1_score("Obama", ["Barack Obama", "Obama"]) == pytest.approx(1.0)
    # "obama" vs "barack obama": precision 1, recall 1/2 -> 2/3
    assert f1_score("Obama", ["Barack Obama"]) == pytest.approx(2 / 3)
    # repeated tokens count once per occurrence: "new new york" vs "new york": common 2,
    # precision 2/3, recall 1 -> 0.8
    assert f1_score("new new york", "New York") == pytest.approx(0.8)
    assert f1_score("Paris", ["London"]) == 0.0
    assert f1_score("the", ["a"]) == 1.0  # both normalise to nothing
    assert f1_score("", ["London"]) == 0.0


def test_empty_golden_list_is_an_error():
    with pytest.raises(ValueError, match="golden_answers is empty"):
        exact_match("x", [])


def test_answer_in_text_on_word_boundaries():
    passage = '"Chuck Berry"\nAmerican musician (1926–2017). Charles Berry was a guitarist.'
    assert answer_in_text("1926", passage)  # the en dash separates the years
    assert answer_in_text("2017", passage)
    assert answer_in_text("American musician", passage)
    assert not answer_in_text("192", passage)
    assert not answer_in_text("guitar", passage)
    assert not answer_in_text("the", passage)  # normalises to nothing


def test_mean_by_data_source_macro_and_micro():
    rows = [
        {"data_source": "nq", "em": 1.0, "f1": 1.0},
        {"data_source": "nq", "em": 0.0, "f1": 0.5},
        {"data_source": "hotpotqa", "em": 0.0, "f1": 0.0},
    ]
    out = mean_by_data_source(rows)
    assert out["nq"] == {"em": 0.5, "f1": 0.75, "count": 2.0}
    assert out["hotpotqa"] == {"em": 0.0, "f1": 0.0, "count": 1.0}
    assert out["average"]["em"] == pytest.approx(0.25)  # mean of 0.5 and 0.0
    assert out["all"]["em"] == pytest.approx(1 / 3)
    assert mean_by_data_source([]) == {}
