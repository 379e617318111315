"""LaMP output parsing and metrics, against numbers worked out by hand."""

from __future__ import annotations

import math

import pytest

from personarag import InputError
from personarag.evaluation.lamp_metrics import macro_f1, parse_label, parse_prediction, parse_rating, score_lamp
from personarag.evaluation.lamp_tasks import LAMP2_TAGS


@pytest.mark.parametrize(
    "text, label",
    [
        ("sci-fi", "sci-fi"),
        ("Sci Fi.", "sci-fi"),
        ('"Thought provoking"', "thought-provoking"),
        ("The tag is: dark comedy", "dark comedy"),  # not "comedy", which starts later
        ("comedy, maybe dark comedy", "comedy"),  # the earliest label named wins
        ("TRUE STORY", "true story"),
        ("a scifi film", None),
        ("", None),
    ],
)
def test_lamp2_label_parsing(text, label):
    assert parse_label(text, LAMP2_TAGS) == label


@pytest.mark.parametrize(
    "text, label", [("[1]", "[1]"), (" [ 2 ] because", "[2]"), ("Answer: 1", "[1]"), ("2.", "[2]"), ("[3]", None), ("none", None)]
)
def test_lamp1_label_parsing(text, label):
    assert parse_prediction("LaMP-1", text) == label


@pytest.mark.parametrize(
    "text, value", [("4", 4.0), ("Score: 3/5", 3.0), ("4.5 stars", 4.5), ("great", None), ("10", None), ("-2", None), ("0", None)]
)
def test_rating_parsing(text, value):
    assert parse_rating(text) == value


def test_lamp1_accuracy_counts_unparsable_as_wrong():
    scores = score_lamp("LaMP-1", {"a": "[2]", "b": "Answer: 1", "c": "neither"}, {"a": "[2]", "b": "[2]", "c": "[1]"})
    assert scores.aggregate == {"accuracy": pytest.approx(1 / 3), "unparsable": 1.0, "n": 3.0}
    assert scores.per_example["c"] == {"parsed": None, "correct": False}


def test_macro_f1_by_hand():
    # a: P=1, R=1/2 -> 2/3; b: P=1/2, R=1 -> 2/3; c: never predicted -> 0; mean 4/9
    assert macro_f1(["a", "b", "b", None], ["a", "a", "b", "c"], ["a", "b", "c"]) == pytest.approx(4 / 9)


def test_lamp2_f1_averages_over_all_fifteen_tags():
    scores = score_lamp("LaMP-2", {"x": "Sci-Fi.", "y": "I'd say dark comedy"}, {"x": "sci-fi", "y": "comedy"})
    # only sci-fi has F1 1; comedy (missed) and dark comedy (wrongly predicted) 0; 12 absent tags 0
    assert scores.aggregate["accuracy"] == 0.5
    assert scores.aggregate["f1"] == pytest.approx(1 / 15)
    assert scores.aggregate["unparsable"] == 0.0


def test_lamp2_gold_outside_the_label_set_is_an_error():
    with pytest.raises(InputError, match="not one of the labels"):
        score_lamp("LaMP-2", {"x": "comedy"}, {"x": "horror"})


def test_lamp3_mae_rmse_with_unparsable_scored_at_worst_distance():
    golds = {"a": "1", "b": "5", "c": "3", "d": "4"}
    predictions = {"a": "1", "b": "The score is 4.", "c": "great!", "d": "7"}
    scores = score_lamp("LaMP-3", predictions, golds)
    # errors: 0, 1, 2 (gold 3: both ends are 2 away -> 5), 3 (gold 4: 1 is the far end)
    assert scores.aggregate["mae"] == pytest.approx(1.5)
    assert scores.aggregate["rmse"] == pytest.approx(math.sqrt(14 / 4))
    assert scores.aggregate["unparsable"] == 2.0
    assert scores.per_example["d"] == {"parsed": None, "abs_error": 3.0}


def test_missing_predictions_count_and_unknown_ids_are_refused():
    scores = score_lamp("LaMP-3", {"a": "5"}, {"a": "5", "b": "1"})
    assert scores.aggregate["mae"] == pytest.approx(2.0)  # b missing: scored as 5, 4 away
    assert scores.aggregate["unparsable"] == 1.0
    with pytest.raises(InputError, match="no gold"):
        score_lamp("LaMP-3", {"zz": "5"}, {"a": "5"})


def test_rouge_by_hand():
    golds = {"a": "Bike Lanes Are Coming Downtown", "b": "Local Sourdough Wins National Award"}
    predictions = {"a": "bike lanes coming", "b": "award wins local"}
    scores = score_lamp("LaMP-4", predictions, golds)
    # a: 3 of 3 predicted words in a 5-word gold, in order: P=1, R=3/5 -> F=0.75 for both
    # b: ROUGE-1 as a; the longest common subsequence is one word: P=1/3, R=1/5 -> F=0.25
    assert scores.per_example["a"] == pytest.approx({"rouge-1": 0.75, "rouge-L": 0.75})
    assert scores.per_example["b"] == pytest.approx({"rouge-1": 0.75, "rouge-L": 0.25})
    assert scores.aggregate == pytest.approx({"rouge-1": 0.75, "rouge-L": 0.5, "n": 2.0})


def test_rouge_stemming_is_an_option():
    plain = score_lamp("LaMP-5", {"a": "retrieving users"}, {"a": "retrieval of user"}).aggregate["rouge-1"]
    stemmed = score_lamp("LaMP-5", {"a": "retrieving users"}, {"a": "retrieval of user"}, use_stemmer=True).aggregate["rouge-1"]
    assert plain == 0.0 and stemmed > 0.0
