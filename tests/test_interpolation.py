"""Interpolating reranker scores with first-stage scores (rerankers.interpolation)."""

from __future__ import annotations

import math

import pytest

from personarag import Document, Query, Ranking, ScoredDoc
from personarag.errors import InputError
from personarag.rerankers.interpolation import WEIGHT_GRID, interpolate, interpolate_rankings, minmax


def ranking(scores: dict[str, float]) -> Ranking:
    return Ranking(Query("q", "text"), [ScoredDoc(Document(d, d), s) for d, s in scores.items()])


def test_minmax_maps_to_unit_range_and_handles_ties_and_non_finite_scores():
    assert minmax([2.0, 4.0, 3.0]) == [0.0, 1.0, 0.5]
    assert minmax([7.0, 7.0]) == [1.0, 1.0]
    assert minmax([1.0, math.nan, 3.0]) == [0.0, 0.0, 1.0]
    assert minmax([-math.inf]) == [0.0]


def test_interpolate_is_a_weighted_sum_of_normalised_scores():
    # first stage: a > b > c; reranker: c > b > a, on different scales
    assert interpolate([10.0, 5.0, 0.0], [0.1, 0.2, 0.9], 0.25) == pytest.approx(
        [0.75 * 0.0 + 0.25 * 1.0, 0.75 * 0.125 + 0.25 * 0.5, 0.75 * 1.0 + 0.25 * 0.0]
    )
    with pytest.raises(InputError, match="3 first-stage scores but 2 reranker scores"):
        interpolate([1.0, 2.0, 3.0], [1.0, 2.0], 0.5)
    for bad in (-0.1, 1.5, True, "0.5"):
        with pytest.raises(InputError, match=r"first_stage_weight must be a number in \[0, 1\]"):
            interpolate([1.0], [1.0], bad)
    assert WEIGHT_GRID[0] == 0.0 and WEIGHT_GRID[-1] == 1.0 and len(WEIGHT_GRID) == 11


def test_interpolate_rankings_moves_between_the_two_orders_with_the_weight():
    first = ranking({"a": 12.0, "b": 11.0, "c": 4.0, "d": 1.0})
    reranked = ranking({"d": 0.9, "c": 0.8, "b": 0.2, "a": 0.1})  # the reranker's own order
    ids = lambda w: [sd.id for sd in interpolate_rankings(first, reranked, w)]  # noqa: E731
    assert ids(0.0) == ["d", "c", "b", "a"]
    assert ids(1.0) == ["a", "b", "c", "d"]
    # w = 0.5: a .5*0 + .5*1 = .5, b .5*.125 + .5*(10/11) = .517, c .5*.875 + .5*(3/11) = .574, d .5
    assert ids(0.5) == ["c", "b", "a", "d"]  # a and d tie at 0.5: the first stage's order breaks it
    fused = interpolate_rankings(first, reranked, 0.5)
    assert fused[0].score == pytest.approx(0.5 * 0.875 + 0.5 * 3 / 11)


def test_interpolate_rankings_refuses_documents_the_first_stage_did_not_return():
    with pytest.raises(InputError, match=r"query q: reranked documents \['z'\] are not in the first-stage ranking"):
        interpolate_rankings(ranking({"a": 1.0}), ranking({"a": 0.5, "z": 0.4}), 0.5)
