"""One min-max normalisation (`retrievers.fusion.minmax`) with one semantics everywhere it is used:
all equal -> 1, non-finite -> 0; wsum fusion, history wsum, collaborative BM25 relevance, interpolation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from personarag import Document, Query, User
from personarag.personal.history import HistoryRetriever
from personarag.rerankers.interpolation import interpolate
from personarag.retrievers.fusion import minmax
from tests.test_collaborative import HashEncoder, make_users, retriever


def test_minmax_semantics():
    assert minmax([3.0, 1.0, 2.0]) == [1.0, 0.0, 0.5]
    assert minmax([4.0, 4.0]) == [1.0, 1.0]  # a list that cannot tell its items apart: full credit
    assert minmax([math.nan, 2.0, -math.inf, 1.0]) == [0.0, 1.0, 0.0, 0.0]
    assert minmax([math.nan]) == [0.0] and minmax([]) == []
    assert minmax(np.array([2.0, 6.0, 4.0])) == [0.0, 1.0, 0.5]


def test_history_wsum_normalises_each_part_with_minmax():
    # no item shares a word with the query, so every BM25 score is 0: the part gives each item 1
    user = User("u", (Document("a", "bright strings"), Document("b", "drum kit"), Document("c", "bright amp")))
    encoder = HashEncoder()
    ranking = HistoryRetriever("wsum:bm25+dense:hash", encoder=encoder, weights=[0.5, 0.5]).retrieve(
        Query("q", "zebra", user=user), k=3)[0]
    q = encoder.encode(["zebra"])[0]
    dense = [float(encoder.encode([d.full_text])[0] @ q) for d in user.history]
    expected = {d.id: 0.5 * 1.0 + 0.5 * s for d, s in zip(user.history, minmax(dense))}
    assert {d.id: d.score for d in ranking.docs} == pytest.approx(expected)


def test_collaborative_bm25_relevance_uses_the_same_minmax():
    users = make_users()
    r = retriever(m=2, relevance="bm25", alpha=0.0).fit_users(users)
    none = r.candidates([Query("q", "zebra", user=users[9])])[0].features[:, 0]
    assert len(none) and set(none.tolist()) == {1.0}  # no document matches: all equal, as in wsum fusion
    some = r.candidates([Query("q", "galaxy", user=users[9])])[0].features[:, 0]
    assert some.max() == 1.0 and some.min() == 0.0


def test_interpolation_uses_the_same_minmax():
    assert interpolate([5.0, 5.0], [0.2, 0.8], 0.5) == pytest.approx([0.5, 1.0])
