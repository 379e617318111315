"""BM25 rankings build their ScoredDocs on first use (LazyRanking); they behave as eager Rankings."""

from __future__ import annotations

import copy
import dataclasses
import gc
import pickle
import weakref

import pytest

from personarag import Document, Query
from personarag.retrievers.bm25 import BM25Retriever
from personarag.retrievers.lazy_ranking import LazyRanking
from personarag.types import Ranking, ScoredDoc, StageTrace

DOCS = [Document(f"d{i}", f"apple {'banana ' * (i % 3)}cherry {i}", title=f"t{i}", meta={"i": i}) for i in range(12)]
QUERIES = [Query("q1", "apple banana"), Query("q2", "banana"), Query("q3", "zebra")]


@pytest.fixture(scope="module")
def retriever() -> BM25Retriever:
    retriever = BM25Retriever(stopwords=None, stemmer=None)
    retriever.index(DOCS)
    return retriever


def eager(ranking: LazyRanking) -> Ranking:
    """The same ranking built the plain way, from its ids and scores (read without building it)."""
    pending = ranking.__dict__["_pending"]
    by_id = {doc.id: doc for doc in DOCS}
    hits = zip(pending.positions.tolist(), pending.scores.tolist())
    docs = tuple(ScoredDoc(by_id[pending.documents[i].id], float(s)) for i, s in hits)
    return Ranking(ranking.query, docs, ranking.trace)


def test_lazy_rankings_equal_eager_ones(retriever):
    rankings = retriever.retrieve(QUERIES, k=10)
    assert all(isinstance(r, LazyRanking) and "_pending" in r.__dict__ for r in rankings)
    expected = [eager(r) for r in rankings]
    assert [r.ids for r in rankings] == [e.ids for e in expected]  # ids build nothing
    assert all("_pending" in r.__dict__ for r in rankings)
    assert rankings == expected and expected == rankings  # either way round
    assert [r.docs for r in rankings] == [e.docs for e in expected]
    first = rankings[0].docs[0]
    assert type(first) is ScoredDoc and first.reasoning is None and first.id == "d2" and first.doc is DOCS[2]
    assert first == ScoredDoc(DOCS[2], first.score)
    assert [d.score for d in rankings[2].docs] == [0.0] * 10  # no match: corpus order, score 0
    assert rankings[2].ids == [f"d{i}" for i in range(10)]
    assert repr(rankings[0]) == repr(expected[0]) and repr(rankings[0]).startswith("Ranking(query=")
    assert rankings[0] != expected[1] and rankings[0] != "not a ranking"


def test_first_read_builds_the_whole_batch(retriever):
    rankings = retriever.retrieve(QUERIES, k=5)
    rankings[1].docs
    assert all("docs" in r.__dict__ and "_pending" not in r.__dict__ for r in rankings)
    # a ranking nobody holds is freed at once: the batch refers to its rankings weakly
    again = retriever.retrieve(QUERIES, k=5)
    gone = weakref.ref(again[0])
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        del again
        assert gone() is None
    finally:
        if was_enabled:
            gc.enable()


def test_top_replace_stage_pickle_copy(retriever):
    (ranking,) = retriever.retrieve(QUERIES[0], k=10)
    reference = eager(ranking)
    head = ranking.top(3)
    assert "_pending" in ranking.__dict__ and isinstance(head, LazyRanking)
    assert head == reference.top(3) and head.ids == reference.ids[:3]
    assert ranking.top(0).docs == () and ranking.top(50) == reference
    replaced = dataclasses.replace(ranking, docs=ranking.docs[:2])
    assert replaced == reference.top(2) and "_pending" not in replaced.__dict__
    staged = ranking.with_stage(ranking.docs[::-1], StageTrace(stage="flip"))
    assert type(staged) is Ranking and staged.ids == reference.ids[::-1] and len(staged.trace) == 2
    fresh = retriever.retrieve(QUERIES[1], k=4)[0]
    for clone in (pickle.loads(pickle.dumps(fresh)), copy.copy(fresh), copy.deepcopy(fresh)):
        assert type(clone) is Ranking and clone == fresh
    assert type(fresh.eager()) is Ranking and fresh.eager() == fresh
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        fresh.nope  # noqa: B018


def test_saved_and_loaded_index_gives_lazy_rankings_too(retriever, tmp_path):
    loaded = BM25Retriever.load(retriever.save(tmp_path / "index"), mmap=True)
    mine, theirs = loaded.retrieve(QUERIES, k=7), retriever.retrieve(QUERIES, k=7)
    assert mine == theirs and [r.docs for r in mine] == [r.docs for r in theirs]


def test_sort_by_score_then_position_equals_lexsort():
    import numpy as np

    from personarag.retrievers.bm25_backends import sort_by_score_then_position

    rng = np.random.default_rng(7)
    scores = rng.choice(np.array([-1.5, -0.25, 0.0, 0.5, 0.5000001, 2.0, 7.25, 1e30], dtype=np.float32), size=(40, 60))
    positions = np.stack([rng.permutation(10**6)[:60] for _ in range(40)])
    got_positions, got_scores = sort_by_score_then_position(positions, scores)
    order = np.lexsort((positions, -scores), axis=-1)
    assert np.array_equal(got_positions, np.take_along_axis(positions, order, axis=-1))
    assert np.array_equal(got_scores, np.take_along_axis(scores, order, axis=-1)) and got_scores.dtype == np.float32


def test_one_hit_and_zero_hit_rankings_build_like_longer_ones(retriever):
    """One position is picked on its own path (itemgetter of one index returns the item, not a tuple)."""
    [one] = retriever.retrieve(QUERIES[:1], k=1)
    expected = eager(one)  # read before the docs are built
    assert one.docs == expected.docs and len(one.docs) == 1 and type(one.docs[0]) is ScoredDoc
    [deep] = retriever.retrieve(QUERIES[:1], k=10)
    assert deep.top(1).docs == deep.docs[:1]
    assert deep.top(0).docs == ()


def test_run_files_and_records_read_ids_and_scores_without_building(retriever):
    from personarag.evaluation.runs import Run
    from personarag.rerankers.traces import reasoning_rows

    rankings = retriever.retrieve(QUERIES, k=10)
    expected = [eager(r) for r in rankings]
    assert [r.scores for r in rankings] == [e.scores for e in expected] and rankings[0].scores[0] > 0
    run = Run.from_rankings(rankings)
    assert reasoning_rows(rankings) == [] and [r.reasoned for r in rankings] == [(), (), ()]
    assert all("_pending" in r.__dict__ for r in rankings)  # none of the above built a ScoredDoc
    assert run == Run.from_rankings(expected)
    rankings[0].docs  # built: the same answers from the built docs
    assert rankings[0].scores == expected[0].scores and rankings[0].reasoned == ()
