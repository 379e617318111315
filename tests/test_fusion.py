"""Rank fusion (RRF, weighted sum) on fixed rankings whose fused values are computed by hand."""

from __future__ import annotations

import json
import math

import pytest

from personarag import Document, InputError, Pipeline, Query, Ranking, ScoredDoc, UnknownSpecError, registry
from personarag.retrievers.base import Retriever
from personarag.retrievers.fusion import FusionRetriever, WeightedFusionRetriever
from personarag.types import StageTrace, Usage

DOCS = {i: Document(i, f"text of {i}") for i in "abcdef"}
# Part A ranks a, b, c, e; part B ranks c, d, a.
A = {"a": 10.0, "b": 8.0, "c": 5.0, "e": 1.0}
B = {"c": 0.9, "d": 0.5, "a": 0.1}


class Fixed(Retriever):
    """The same scored list for every query; remembers the k it was asked for."""

    spec_name = "test-fixed"

    def __init__(self, scores: dict[str, float], name: str = "fixed", calls: int = 0) -> None:
        self.scores = scores
        self.name = name
        self.calls = calls
        self.asked: list[int] = []
        self.indexed = False

    def _index(self, corpus):
        self.indexed = True

    def _retrieve(self, queries, k):
        self.asked.append(k)
        order = sorted(self.scores, key=lambda d: -self.scores[d])[:k]
        trace = StageTrace(self.name, usage=Usage(calls=self.calls))
        return [Ranking(q, [ScoredDoc(DOCS[d], self.scores[d]) for d in order], (trace,)) for q in queries]


class NoCorpus(Fixed):
    spec_name = "test-nocorpus"
    needs_corpus = False

    def _index(self, corpus):
        raise AssertionError("a part that needs no corpus must not be indexed")


class WordOverlap(Retriever):
    """Counts shared words: a part buildable from a bare spec string."""

    spec_name = "test-overlap"

    def _index(self, corpus):
        self.corpus = corpus

    def _retrieve(self, queries, k):
        out = []
        for q in queries:
            words = set(q.text.lower().split())
            scored = [ScoredDoc(d, float(len(words & set(d.text.lower().split())))) for d in self.corpus.values()]
            scored.sort(key=lambda s: -s.score)
            out.append(Ranking(q, scored[:k], (StageTrace("overlap"),)))
        return out


@pytest.fixture()
def test_registry(monkeypatch):
    for name, cls in (("test-fixed", "Fixed"), ("test-overlap", "WordOverlap"), ("test-nocorpus", "NoCorpus")):
        monkeypatch.setitem(registry.REGISTRY, name, registry.Entry("retriever", f"{__name__}:{cls}", None, ""))


def fuse(cls, **params):
    retriever = cls([Fixed(A, "A", calls=1), Fixed(B, "B", calls=2)], **params)
    retriever.index(list(DOCS.values()))
    return retriever.retrieve(Query("q", "anything"), k=10)[0]


def scores(ranking):
    return {d.id: d.score for d in ranking.docs}


def test_rrf_hand_computed_with_ties_and_single_part_documents():
    ranking = fuse(FusionRetriever)
    expected = {"a": 1 / 61 + 1 / 63, "c": 1 / 63 + 1 / 61, "b": 1 / 62, "d": 1 / 62, "e": 1 / 64}
    assert scores(ranking) == pytest.approx(expected, abs=1e-15)
    # a and c tie (best rank 1 each; a is met first), b and d tie (best rank 2; b is in the first part)
    assert ranking.ids == ["a", "c", "b", "d", "e"]
    info = ranking.trace[-1].info
    assert info["parts"] == ["test-fixed", "test-fixed"] and info["depth"] == 100
    assert info["ranks"] == {"a": [1, 3], "c": [3, 1], "b": [2, None], "d": [None, 2], "e": [4, None]}
    assert [t.stage for t in ranking.trace] == ["A", "B", "rrf"]
    assert ranking.usage.calls == 3  # each part's usage counted once


def test_rrf_weights_and_constant():
    ranking = fuse(FusionRetriever, weights=[2, 1], rank_constant=0)
    expected = {"a": 2 / 1 + 1 / 3, "c": 2 / 3 + 1 / 1, "b": 2 / 2, "d": 1 / 2, "e": 2 / 4}
    assert scores(ranking) == pytest.approx(expected, abs=1e-12)
    assert ranking.ids == ["a", "c", "b", "d", "e"]  # d (0.5) and e (0.5) tie: best rank 2 beats 4
    weighted = fuse(FusionRetriever, weights=[2, 1])
    assert weighted.ids == ["a", "c", "b", "e", "d"]  # 2/64 = 0.03125 > 1/62 = 0.01613


def test_wsum_minmax_hand_computed():
    ranking = fuse(WeightedFusionRetriever)
    a_norm = {"a": 1.0, "b": 7 / 9, "c": 4 / 9, "e": 0.0}  # (s - 1) / (10 - 1)
    b_norm = {"c": 1.0, "d": 0.5, "a": 0.0}  # (s - 0.1) / (0.9 - 0.1)
    expected = {d: a_norm.get(d, 0.0) + b_norm.get(d, 0.0) for d in "abcde"}
    assert scores(ranking) == pytest.approx(expected, abs=1e-12)
    assert ranking.ids == ["c", "a", "b", "d", "e"]
    weighted = fuse(WeightedFusionRetriever, weights=[0.25, 1.0])
    assert scores(weighted)["a"] == pytest.approx(0.25) and weighted.ids[:2] == ["c", "d"]


def test_wsum_zscore_hand_computed():
    ranking = fuse(WeightedFusionRetriever, normalization="zscore")
    std_a = math.sqrt((4**2 + 2**2 + 1**2 + 5**2) / 4)  # mean 6
    std_b = math.sqrt((0.4**2 + 0 + 0.4**2) / 3)  # mean 0.5
    za = {"a": 4 / std_a, "b": 2 / std_a, "c": -1 / std_a, "e": -5 / std_a}
    zb = {"c": 0.4 / std_b, "d": 0.0, "a": -0.4 / std_b}
    expected = {d: za.get(d, za["e"]) + zb.get(d, zb["a"]) for d in "abcde"}  # missing -> the part's lowest z
    assert scores(ranking) == pytest.approx(expected, abs=1e-9)
    assert ranking.ids == ["c", "a", "b", "d", "e"]


def test_wsum_equal_scores_normalise_to_one():
    retriever = WeightedFusionRetriever([Fixed({"a": 3.0, "b": 3.0}), Fixed({"b": 1.0, "c": 0.0})])
    ranking = retriever.retrieve(Query("q", "x"), k=5)[0]
    assert scores(ranking) == {"b": 2.0, "a": 1.0, "c": 0.0}


def test_depth_and_k():
    first, second = Fixed(A), Fixed(B)
    shallow = FusionRetriever([first, second], depth=2).retrieve(Query("q", "x"), k=3)[0]
    assert first.asked == [2] and second.asked == [2]
    assert scores(shallow) == pytest.approx({"a": 1 / 61, "c": 1 / 61, "b": 1 / 62})  # c's rank 3 in A is cut
    FusionRetriever([first, second]).retrieve(Query("q", "x"), k=150)
    assert first.asked[-1] == 150


def test_spec_string_builds_nested_parts_and_config_round_trips(test_registry):
    docs = [Document("d1", "the cat sat"), Document("d2", "a dog ran far"), Document("d3", "cat and dog")]
    fused = registry.build("rrf:test-overlap+test-overlap", depth=5)
    assert isinstance(fused, FusionRetriever) and len(fused.retrievers) == 2
    config = fused.config()
    assert config == {
        "spec": "rrf",
        "params": {"retrievers": [{"spec": "test-overlap", "params": {}}] * 2, "depth": 5},
    }
    again = registry.build_from_config(json.loads(json.dumps(config)))
    assert again.config() == config
    pipe = Pipeline([config], docs, k=2)
    assert pipe("cat dog").ids == ["d3", "d1"]
    nested = WeightedFusionRetriever([{"spec": "test-fixed", "params": {"scores": A}}, fused], normalization="zscore")
    rebuilt = registry.build_from_config(json.loads(json.dumps(nested.config())))
    assert rebuilt.config() == nested.config()
    assert rebuilt.config()["params"]["retrievers"][1]["spec"] == "rrf"


def test_parts_without_corpus_are_not_indexed(test_registry):
    fused = FusionRetriever([NoCorpus(A), Fixed(B)])
    assert fused.needs_corpus is True
    fused.index(list(DOCS.values()))
    assert fused.retrievers[1].indexed
    assert FusionRetriever([NoCorpus(A), NoCorpus(B)]).needs_corpus is False


def test_fusion_input_errors(test_registry):
    with pytest.raises(InputError, match="at least two"):
        FusionRetriever("test-overlap")
    with pytest.raises(InputError, match="empty part"):
        FusionRetriever("test-overlap+")
    with pytest.raises(InputError, match="weights must be a list of 2"):
        FusionRetriever("test-overlap+test-overlap", weights=[1.0])
    with pytest.raises(InputError, match="at least one weight"):
        WeightedFusionRetriever("test-overlap+test-overlap", weights=[0, 0])
    with pytest.raises(InputError, match="normalization"):
        WeightedFusionRetriever("test-overlap+test-overlap", normalization="softmax")
    with pytest.raises(UnknownSpecError, match="bm42"):
        FusionRetriever("test-overlap+bm42")
    with pytest.raises(InputError, match="depth"):
        FusionRetriever("test-overlap+test-overlap", depth=0)


def test_rrf_over_bm25_and_dense_spec(tiny_bi_encoder_path):
    pytest.importorskip("personarag.retrievers.bm25")
    docs = [Document("d1", "the cat sat on the mat"), Document("d2", "dogs run far"), Document("d3", "a cat and a dog")]
    fused = registry.build(f"rrf:bm25+dense:{tiny_bi_encoder_path}")
    assert [type(p).__name__ for p in fused.retrievers] == ["BM25Retriever", "DenseRetriever"]
    assert fused.retrievers[1].model == str(tiny_bi_encoder_path)
    fused.index(docs)
    ranking = fused.retrieve(Query("q", "cat mat"), k=3)[0]
    ranks = ranking.trace[-1].info["ranks"]
    assert ranking.ids[0] == "d1" and ranks["d1"][0] == 1  # BM25 puts the only doc with both words first
    dense_ranks = [r[1] for r in ranks.values()]
    assert sorted(dense_ranks) == [1, 2, 3]
    rebuilt = registry.build_from_config(json.loads(json.dumps(fused.config())))
    assert rebuilt.config() == fused.config()
