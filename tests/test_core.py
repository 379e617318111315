"""Types, registry, components and the Pipeline, with a tiny in-test retriever."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from personarag import Corpus, Document, InputError, Pipeline, Query, Ranking, ScoredDoc, UnknownSpecError, registry
from personarag.retrievers.base import Retriever
from personarag.rerankers.base import Reranker
from personarag.types import StageTrace, Usage


class WordOverlap(Retriever):
    """Counts shared lowercase words: enough to exercise the Pipeline, not a real retriever."""

    spec_name = "test-overlap"

    def __init__(self, bonus: float = 0.0) -> None:
        self.bonus = bonus

    def _index(self, corpus):
        self.corpus = corpus

    def _retrieve(self, queries, k):
        out = []
        for q in queries:
            words = set(q.text.lower().split())
            scored = [ScoredDoc(d, len(words & set(d.text.lower().split())) + self.bonus) for d in self.corpus.values()]
            scored.sort(key=lambda s: -s.score)
            out.append(Ranking(q, scored[:k], (StageTrace("overlap"),)))
        return out


class Reverse(Reranker):
    spec_name = "test-reverse"

    def _rerank(self, rankings):
        return [r.with_stage(list(reversed(r.docs)), StageTrace("reverse", usage=Usage(calls=1))) for r in rankings]


@pytest.fixture()
def docs():
    return [Document("d1", "the cat sat"), Document("d2", "a dog ran far"), Document("d3", "cat and dog")]


@pytest.fixture()
def test_registry(monkeypatch):
    monkeypatch.setitem(registry.REGISTRY, "test-overlap", registry.Entry("retriever", f"{__name__}:WordOverlap", None, ""))
    monkeypatch.setitem(registry.REGISTRY, "test-reverse", registry.Entry("reranker", f"{__name__}:Reverse", None, ""))


def test_corpus_rejects_empty_and_duplicates(docs):
    with pytest.raises(InputError, match="empty"):
        Corpus([])
    with pytest.raises(InputError, match="duplicate document id 'd1'"):
        Corpus(docs + [Document("d1", "again")])
    assert Corpus(docs).ids == ["d1", "d2", "d3"]


def test_query_needs_text():
    with pytest.raises(InputError, match="non-empty"):
        Query("q", "   ")
    with pytest.raises(InputError, match="id"):
        Query("", "text")


def test_unknown_spec_lists_valid_names():
    with pytest.raises(UnknownSpecError) as info:
        registry.build("bm42")
    assert "valid names" in str(info.value)


def test_every_registry_entry_resolves_to_a_class_with_its_name():
    for name, entry in registry.REGISTRY.items():
        cls = entry.load()
        assert cls.spec_name == name, name
        assert cls.role == entry.role, name


def test_pipeline_runs_and_config_round_trips(docs, test_registry, tmp_path):
    pipe = Pipeline(["test-overlap", "test-reverse"], docs, k=2)
    ranking = pipe("cat dog")
    assert ranking.ids == ["d1", "d3"]  # overlap puts d3 first; reverse flips the top 2
    assert [t.stage for t in ranking.trace] == ["overlap", "reverse"]
    assert ranking.usage.calls == 1
    for suffix in (".json", ".yaml"):
        path = pipe.save(tmp_path / f"pipe{suffix}")
        again = Pipeline.load(path, docs)
        assert again.config() == pipe.config()
        assert again("cat dog").ids == ranking.ids
    assert json.loads((tmp_path / "pipe.json").read_text())["stages"][0] == {"spec": "test-overlap", "params": {}}


def test_pipeline_stage_order_is_checked(test_registry, docs):
    with pytest.raises(InputError, match="retriever must come first"):
        Pipeline([Reverse(), WordOverlap()])
    with pytest.raises(InputError, match="second retriever"):
        Pipeline([WordOverlap(), WordOverlap()])
    with pytest.raises(InputError, match="index"):
        Pipeline([WordOverlap()]).run([Query("q", "cat")])


def test_retrieve_validates_k(docs):
    retriever = WordOverlap()
    retriever.index(docs)
    with pytest.raises(InputError, match="positive integer"):
        retriever.retrieve([Query("q", "cat")], k=0)


def test_reranker_depth_keeps_tail(docs):
    retriever = WordOverlap()
    retriever.index(docs)
    ranking = retriever.retrieve(Query("q", "cat dog"), k=3)[0]
    out = Reverse().rerank(ranking, depth=2)[0]
    assert out.ids == [ranking.ids[1], ranking.ids[0], ranking.ids[2]]


def test_component_config_captures_constructor_args():
    assert WordOverlap(bonus=1.5).config() == {"spec": "test-overlap", "params": {"bonus": 1.5}}
    assert WordOverlap(2.0).params == {"bonus": 2.0}


def test_import_is_light():
    code = (
        "import sys, personarag, personarag.pipeline, personarag.registry;"
        "heavy=[m for m in ('torch','transformers','faiss','vllm','pyserini','sentence_transformers') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_pipeline_timings_are_empty_before_a_run_and_name_each_stage_after():
    from personarag import Document, Pipeline

    pipe = Pipeline(["bm25"], [Document("a", "solar panels"), Document("b", "honey bees")], k=2)
    assert pipe.timings == {}
    pipe("solar")
    assert list(pipe.timings) == ["bm25"] and pipe.timings["bm25"] >= 0
