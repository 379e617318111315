"""Parsing of LLM reranker answers: tables of malformed strings and seeded fuzzing."""

from __future__ import annotations

import random

import pytest

from personarag.rerankers.parsing import (
    parse_choice,
    parse_group_scores,
    parse_permutation,
    parse_score,
    split_reasoning,
)


@pytest.mark.parametrize(
    "text, n, expected, problem",
    [
        ("[2] > [1] > [3]", 3, [1, 0, 2], None),
        ("[3] > [1]", 3, [2, 0, 1], "missing"),
        ("[2] > [2] > [1] > [3]", 3, [1, 0, 2], "repeated"),
        ("[5] > [0] > [2] > [1] > [3]", 3, [1, 0, 2], "outside"),
        ("Sure! Here is the ranking: [3] > [2] > [1]. Hope it helps.", 3, [2, 1, 0], None),
        ("3 > 1 > 2", 3, [2, 0, 1], None),
        ("", 3, [0, 1, 2], "empty"),
        ("I cannot rank these.", 3, [0, 1, 2], "no identifiers"),
        ("<think>[1] looks weak, [3] strong</think>[3] > [2] > [1]", 3, [2, 1, 0], None),
        ("<think>[3] is best but I ran out of tok", 3, [0, 1, 2], "unclosed"),
        ("reasoning without opening</think> [2] > [3] > [1]", 3, [1, 2, 0], None),
        ("[ 2 ] > [ 1 ]", 2, [1, 0], None),
        ("[10] > [1]", 10, [9, 0, 1, 2, 3, 4, 5, 6, 7, 8], "missing"),
    ],
)
def test_permutation_table(text, n, expected, problem):
    order, parsed = parse_permutation(text, n)
    assert order == expected
    if problem is None:
        assert parsed.problems == []
    else:
        assert any(problem in p for p in parsed.problems), parsed.problems


def test_reasoning_is_split_and_kept():
    parsed = split_reasoning("<think>the second passage names the gene</think>\n[2] > [1]")
    assert parsed.reasoning == "the second passage names the gene"
    assert parsed.answer == "[2] > [1]"
    unclosed = split_reasoning("<think>still thinking")
    assert unclosed.reasoning == "still thinking" and unclosed.answer == ""
    assert split_reasoning("<think>done</think>").problems == ["nothing after </think>"]
    assert split_reasoning("   ").problems == ["empty answer"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("B", 1),
        ("[C]", 2),
        ("Passage D", 3),
        ("The most relevant passage is C.", 2),
        ("Answer: [B]", 1),
        ("<think>A mentions it, but C is closer</think>Answer: C", 2),
        ("passage b", 1),
        ("", None),
        ("none of them", None),
        ("E", None),  # not a shown label
        ("<think>A or B", None),
    ],
)
def test_choice_table(text, expected):
    choice, parsed = parse_choice(text, ["A", "B", "C", "D"])
    assert choice == expected
    assert (choice is None) == bool(parsed.problems)


@pytest.mark.parametrize(
    "text, expected, clipped",
    [
        ("Score: 2", 2.0, False),
        ("score 3", 3.0, False),
        ("<think>x</think>Score: 7", 3.0, True),
        ("Score: -1", 0.0, True),
        ("yes", 3.0, False),
        ("No.", 0.0, False),
        ("I think 1.5", 1.5, False),
        ("", None, False),
        ("maybe", None, False),
    ],
)
def test_score_table(text, expected, clipped):
    score, parsed = parse_score(text, 0, 3)
    assert score == expected
    assert any("clipped" in p for p in parsed.problems) == clipped


def test_group_scores_formats_and_repairs():
    scores, parsed = parse_group_scores("[1] score: 7\n[2] score: 12\n[3]: 4\n4: 2\n[9] score: 5\n[1] score: 1", 5, 0, 10)
    assert scores == [7.0, 10.0, 4.0, 2.0, None]
    text = " | ".join(parsed.problems)
    assert "clipped to 10" in text and "outside 1..5" in text and "repeated" in text and "without a score: [5]" in text
    scores, parsed = parse_group_scores("<think>hmm</think>\n[2] score: 3 [1] score: 9", 2, 0, 10)
    assert scores == [9.0, 3.0] and parsed.reasoning == "hmm"
    scores, parsed = parse_group_scores("<think>unfinished", 2, 0, 10)
    assert scores == [None, None] and any("unclosed" in p for p in parsed.problems)


def _noise(rng: random.Random) -> str:
    pieces = ["[", "]", ">", " ", "<think>", "</think>", "score:", "Passage", "\n", "-", ".", "yes", "no", "A", "Z", "é", "{", "}"]
    pieces += [str(rng.randint(-3, 40)) for _ in range(5)]
    return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))


@pytest.mark.parametrize("seed", range(5))
def test_fuzzed_answers_never_crash_and_stay_well_formed(seed):
    rng = random.Random(seed)
    for _ in range(400):
        text = _noise(rng)
        n = rng.randint(1, 25)
        order, _ = parse_permutation(text, n)
        assert sorted(order) == list(range(n)), text
        labels = [chr(ord("A") + i) for i in range(rng.randint(2, 6))]
        choice, _ = parse_choice(text, labels)
        assert choice is None or 0 <= choice < len(labels)
        score, _ = parse_score(text, 0, 9)
        assert score is None or 0 <= score <= 9
        scores, _ = parse_group_scores(text, n, 0, 10)
        assert len(scores) == n and all(s is None or 0 <= s <= 10 for s in scores)


@pytest.mark.parametrize("seed", range(3))
def test_a_valid_permutation_survives_surrounding_noise(seed):
    rng = random.Random(seed)
    for _ in range(100):
        n = rng.randint(2, 20)
        truth = list(range(n))
        rng.shuffle(truth)
        answer = " > ".join(f"[{i + 1}]" for i in truth)
        text = f"<think>{_noise(rng)}</think>\n{answer}"
        if "</think>" in text[text.index("</think>") + 8:]:
            continue
        order, parsed = parse_permutation(text, n)
        assert order == truth and parsed.problems == []
