"""Per-stage reranker depth (code, configs, Pipeline round trip), `Reranker.rank` on plain texts,
and raw model answers kept on listwise / setwise / groupwise traces."""

from __future__ import annotations

import json
import random

import pytest

from personarag import Document, InputError, Pipeline, Query, Ranking, ScoredDoc, registry
from personarag.rerankers.groupwise import GroupwiseReranker
from personarag.rerankers.listwise import ListwiseReranker
from personarag.rerankers.pointwise import PointwiseReranker
from personarag.rerankers.setwise import SetwiseReranker
from personarag.rerankers.traces import reasoning_rows
from personarag.testing import OracleLLM, ScriptedLLM
from test_llm_rerankers import Fixed  # prepared candidate lists: the retriever is not under test




@pytest.fixture(scope="module")
def world():
    rng = random.Random(4)
    docs = [Document(f"d{i}", f"passage {i} " + " ".join(rng.choice("abcdefgh") for _ in range(10))) for i in range(40)]
    query = Query("q1", "which passage")
    # relevant documents sit deep in the first-stage list, so a reranker that sees them moves them up
    qrels = {"q1": {"d35": 2, "d25": 2, "d15": 1, "d5": 1}}
    ranking = Ranking(query, [ScoredDoc(d, float(40 - i)) for i, d in enumerate(docs)])
    return docs, query, qrels, ranking


def listed_labels(prompt: str) -> list[str]:
    return [line.split("]")[0] + "]" for line in prompt.splitlines() if line.startswith("[")]


def test_each_reranker_reranks_its_own_depth_and_the_pipeline_depth_is_the_default(world):
    docs, query, qrels, ranking = world
    oracle = OracleLLM(docs, [query], qrels)
    judge = ScriptedLLM(default="[2] > [1]")
    pipe = Pipeline(
        [Fixed([ranking]), PointwiseReranker(oracle, depth=30), ListwiseReranker(judge, window=5, stride=2, depth=5)],
        docs, k=40, rerank_depth=20,
    )
    out = pipe.run([query])[0]
    # pointwise judged the top 30 (d25, d5, d15 move up; d35 stays below), listwise swapped the top 2 of its 5
    assert out.ids[:5] == ["d5", "d25", "d15", "d0", "d1"]
    assert out.ids[30:] == ranking.ids[30:]
    assert judge.calls == 1 and listed_labels(judge.seen[0][-1].content) == ["[1]", "[2]", "[3]", "[4]", "[5]"]
    # a stage without a depth of its own takes the pipeline's rerank_depth
    default = Pipeline([Fixed([ranking]), PointwiseReranker(oracle)], docs, k=40, rerank_depth=20).run([query])[0]
    assert default.ids[:3] == ["d5", "d15", "d0"] and default.ids[20:] == ranking.ids[20:]
    # an explicit depth in the call wins over the stage's own
    assert PointwiseReranker(oracle, depth=30).rerank(ranking, depth=10)[0].ids[10:] == ranking.ids[10:]


def test_depth_round_trips_through_specs_configs_and_files(tmp_path):
    pipe = Pipeline(
        ["bm25", {"spec": "cross-encoder", "params": {"model": "some/model", "depth": 100}},
         registry.build("listwise:scripted:judge", depth=20, window=10, stride=5)],
        rerank_depth=50,
    )
    config = pipe.config()
    assert [s["params"].get("depth") for s in config["stages"][1:]] == [100, 20]
    for again in (Pipeline.from_config(json.loads(json.dumps(config))), Pipeline.load(pipe.save(tmp_path / "p.yaml"))):
        assert [r.depth for r in again.rerankers] == [100, 20]
        assert again.rerank_depth == 50 and again.config() == config


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "20"])
def test_a_bad_stage_depth_is_refused_at_construction(bad):
    with pytest.raises(InputError, match="depth must be a positive integer"):
        ListwiseReranker(ScriptedLLM(default=""), depth=bad)
    with pytest.raises(InputError, match="depth must be a positive integer"):
        registry.build("cross-encoder:some/model", depth=bad)


def test_shared_options_are_checked_by_name_through_specs():
    with pytest.raises(InputError) as error:
        registry.build("listwise:scripted:judge", windw=3)
    message = str(error.value)
    assert "did you mean 'window'" in message
    assert all(name in message for name in ("stride", "depth", "max_doc_tokens", "reasoning_tokens", "seed"))
    with pytest.raises(InputError, match="unknown parameter 'dept'"):
        registry.build("rag:scripted:x", dept=3)
    assert registry.build("lamp:scripted:x", task="LaMP-4", batch_size=2).batch_size == 2
    with pytest.raises(InputError, match="mode='reason'"):
        PointwiseReranker(ScriptedLLM(default=""), reasoning=True)


def test_rank_takes_plain_texts_and_returns_a_ranking():
    llm = ScriptedLLM(default="[3] > [1] > [2]")
    ranking = ListwiseReranker(llm).rank("which fruit is red", ["a banana", "a plum", "an apple"])
    assert ranking.ids == ["2", "0", "1"]
    assert [d.doc.text for d in ranking.docs] == ["an apple", "a banana", "a plum"]
    assert [d.score for d in ranking.docs] == [3.0, 2.0, 1.0]
    assert "Query: which fruit is red" in llm.seen[0][-1].content
    docs = [Document("x", "a banana"), Document("y", "an apple")]
    assert ListwiseReranker(ScriptedLLM(default="[2] > [1]")).rank("red fruit", docs).ids == ["y", "x"]
    assert ListwiseReranker(llm).rank("q", ["a", "b", "c"], depth=2).ids[2] == "2"  # below the depth: input order
    with pytest.raises(InputError, match="a single one"):
        ListwiseReranker(llm).rank("q", "just one text")
    with pytest.raises(InputError, match=r"documents\[1\] is a int"):
        ListwiseReranker(llm).rank("q", ["a", 3])


def small_ranking(n: int) -> Ranking:
    return Ranking(Query("q", "tumor gene"), [ScoredDoc(Document(f"d{i}", f"text {i}"), float(n - i)) for i in range(n)])


@pytest.mark.parametrize(
    "make, answer, first_where",
    [
        (lambda llm: ListwiseReranker(llm, window=3, stride=1), "[2] > [1] > [3]", "pass 1, window 2-4"),
        (lambda llm: SetwiseReranker(llm, c=3, top_k=2), "B", "choice among candidates 2, 4"),
        (lambda llm: GroupwiseReranker(llm, group_size=2), "[1] score: 3\n[2] score: 9", "first pass group of candidates 1..2"),
    ],
)
def test_raw_answers_are_kept_on_the_trace_without_reasoning(make, answer, first_where):
    out = make(ScriptedLLM(default=answer)).rerank(small_ranking(4))[0]
    trace = out.trace[-1]
    assert trace.reasoning is None
    answers = trace.info["answers"]
    assert len(answers) == trace.usage.calls >= 2
    assert answers[0] == {"where": first_where, "text": answer}
    rows = [r for r in reasoning_rows([out]) if "answer" in r]
    assert [r["answer"] for r in rows] == [a["text"] for a in answers]
    assert rows[0] == {"query_id": "q", "doc_id": None, "stage": trace.stage, "where": first_where, "answer": answer}
