"""LLM rerankers (pointwise, listwise, setwise, groupwise) against the qrels oracle and scripted LLMs."""

from __future__ import annotations

import json
import random

import pytest

from personarag import Document, InputError, Pipeline, Query, Ranking, ScoredDoc, registry
from personarag.llm.base import LLM
from personarag.testing import OracleLLM, ScriptedLLM
from personarag.rerankers.groupwise import GroupwiseReranker
from personarag.rerankers.listwise import ListwiseReranker, window_starts
from personarag.rerankers.pointwise import PointwiseReranker
from personarag.prompts import load_prompt, shipped_prompts
from personarag.rerankers.setwise import SetwiseReranker
from personarag.rerankers.traces import write_reasoning
from personarag.retrievers.base import Retriever
from personarag.types import StageTrace

WORDS = "gene protein cell tumor immune virus brain heart drug trial dose risk mouse blood liver lung".split()


def make_corpus(n: int, seed: int = 0) -> list[Document]:
    rng = random.Random(seed)
    return [
        Document(f"d{i}", f"Study {i} reports " + " ".join(rng.choice(WORDS) for _ in range(40)), title=f"Paper {i}")
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def world():
    docs = make_corpus(100)
    queries = [Query("q1", "which gene drives tumor growth"), Query("q2", "does the drug lower heart risk")]
    qrels = {"q1": {"d3": 2, "d40": 1, "d77": 1, "d98": 2}, "q2": {"d5": 1, "d60": 2, "d61": 0}}
    rng = random.Random(1)
    rankings = []
    for query in queries:
        shuffled = docs[:]
        rng.shuffle(shuffled)
        rankings.append(Ranking(query, [ScoredDoc(d, 0.0) for d in shuffled]))
    return docs, queries, qrels, rankings


def grades(ranking: Ranking, qrels) -> list[int]:
    return [qrels[ranking.query.id].get(i, 0) for i in ranking.ids]


def ideal(ranking: Ranking, qrels) -> list[int]:
    return sorted(grades(ranking, qrels), reverse=True)


ALL_RERANKERS = [
    ("pointwise-yesno", lambda llm: PointwiseReranker(llm)),
    ("pointwise-fine", lambda llm: PointwiseReranker(llm, mode="fine", k=4)),
    ("pointwise-reason", lambda llm: PointwiseReranker(llm, mode="reason", samples=2)),
    ("listwise", lambda llm: ListwiseReranker(llm)),
    ("listwise-reason", lambda llm: ListwiseReranker(llm, reasoning=True, window=10, stride=5)),
    ("setwise-heap", lambda llm: SetwiseReranker(llm, c=4, top_k=10)),
    ("setwise-bubble", lambda llm: SetwiseReranker(llm, c=3, top_k=5, method="bubblesort", reasoning=True)),
    ("groupwise", lambda llm: GroupwiseReranker(llm, group_size=10)),
    ("groupwise-2pass", lambda llm: GroupwiseReranker(llm, group_size=7, second_pass=14, reasoning=True)),
]


@pytest.mark.parametrize("name, make", ALL_RERANKERS, ids=[n for n, _ in ALL_RERANKERS])
def test_perfect_oracle_gives_the_ideal_order(world, name, make):
    docs, queries, qrels, rankings = world
    oracle = OracleLLM(docs, queries, qrels)
    out = make(oracle).rerank(rankings)
    for before, after in zip(rankings, out):
        assert sorted(after.ids) == sorted(before.ids)
        assert grades(after, qrels)[:10] == ideal(before, qrels)[:10], name
        assert after.trace[-1].problems == ()
        assert after.trace[-1].usage.calls > 0
        scores = [d.score for d in after.docs]
        assert scores == sorted(scores, reverse=True)
    assert oracle.unknown_docs == 0


def test_sliding_window_20_10_makes_9_calls_per_pass(world):
    docs, queries, qrels, rankings = world
    assert window_starts(100, 20, 10) == [(80, 100), (70, 90), (60, 80), (50, 70), (40, 60), (30, 50), (20, 40), (10, 30), (0, 20)]
    assert window_starts(15, 20, 10) == [(0, 15)]
    for passes in (1, 2):
        oracle = OracleLLM(docs, queries, qrels)
        out = ListwiseReranker(oracle, window=20, stride=10, passes=passes).rerank(rankings[:1])[0]
        assert out.trace[-1].usage.calls == 9 * passes
        assert len(out.trace[-1].info["windows"]) == 9 * passes


class BatchCounter(OracleLLM):
    """Counts backend round trips (one per generate/score batch)."""

    def _generate(self, chats, config):
        self.batches = getattr(self, "batches", []) + [len(chats)]
        return super()._generate(chats, config)

    def _score(self, chats, answers):
        self.batches = getattr(self, "batches", []) + [len(chats)]
        return super()._score(chats, answers)


def test_prompts_of_a_query_batch_share_llm_calls(world):
    docs, queries, qrels, rankings = world
    oracle = BatchCounter(docs, queries, qrels)
    PointwiseReranker(oracle).rerank(rankings)
    assert oracle.batches == [200]  # every (query, doc) pair of both queries in one score call
    oracle = BatchCounter(docs, queries, qrels)
    ListwiseReranker(oracle).rerank(rankings)
    assert oracle.batches == [2] * 9  # the two queries' windows advance together
    oracle = BatchCounter(docs, queries, qrels)
    GroupwiseReranker(oracle, group_size=25).rerank(rankings)
    assert oracle.batches == [8]
    oracle = BatchCounter(docs, queries, qrels)
    out = SetwiseReranker(oracle).rerank(rankings)
    assert len(oracle.batches) == max(r.trace[-1].info["comparisons"] for r in out)
    assert sum(oracle.batches) == sum(r.trace[-1].usage.calls for r in out)


def test_oracle_errors_degrade_reproducibly(world):
    docs, queries, qrels, rankings = world
    runs = {}
    for seed in (0, 0, 1):
        oracle = OracleLLM(docs, queries, qrels, error_rate=0.5, seed=seed)
        runs.setdefault(seed, []).append([r.ids for r in GroupwiseReranker(oracle).rerank(rankings)])
    assert runs[0][0] == runs[0][1]
    assert runs[0][0] != runs[1][0]
    noisy = [grades(r, qrels)[:10] for r in PointwiseReranker(OracleLLM(docs, queries, qrels, error_rate=0.5)).rerank(rankings)]
    assert noisy != [ideal(r, qrels)[:10] for r in rankings]


# --- fallbacks on malformed answers ----------------------------------------------------
def small_ranking(n: int = 5) -> Ranking:
    docs = make_corpus(n, seed=3)
    return Ranking(Query("q", "tumor gene"), [ScoredDoc(d, float(n - i)) for i, d in enumerate(docs)], (StageTrace("retrieval"),))


@pytest.mark.parametrize(
    "reranker, answer, expected, problem",
    [
        (lambda llm: ListwiseReranker(llm, window=5, stride=2), "[3] > [3] > [9]", [2, 0, 1, 3, 4], "repeated"),
        (lambda llm: ListwiseReranker(llm, window=5, stride=2), "", [0, 1, 2, 3, 4], "empty"),
        (lambda llm: ListwiseReranker(llm, window=5, stride=2, reasoning=True), "<think>long thoughts", [0, 1, 2, 3, 4], "unclosed"),
        (lambda llm: GroupwiseReranker(llm, group_size=5), "[2] score: 99\n[4] score: 3", [1, 3, 0, 2, 4], "clipped"),
        (lambda llm: GroupwiseReranker(llm, group_size=5), "no idea", [0, 1, 2, 3, 4], "without a score"),
        (lambda llm: SetwiseReranker(llm, c=5, top_k=2), "none of them", [0, 1, 2, 3, 4], "no label"),
        (lambda llm: PointwiseReranker(llm, mode="reason"), "I refuse", [0, 1, 2, 3, 4], "no readable score"),
    ],
)
def test_malformed_answers_fall_back_to_input_order_and_are_recorded(reranker, answer, expected, problem):
    ranking = small_ranking()
    out = reranker(ScriptedLLM(default=answer)).rerank(ranking)[0]
    assert out.ids == [ranking.ids[i] for i in expected]
    assert any(problem in p for p in out.trace[-1].problems), out.trace[-1].problems
    assert [t.stage for t in out.trace][0] == "retrieval"


def test_no_llm_call_for_empty_or_single_candidate_lists():
    llm = ScriptedLLM()  # no responses and no default: any call would raise
    one = Ranking(Query("q", "x"), [ScoredDoc(Document("d", "text"), 1.0)])
    empty = Ranking(Query("q2", "y"), [])
    for reranker in (PointwiseReranker(llm), ListwiseReranker(llm), SetwiseReranker(llm), GroupwiseReranker(llm)):
        out = reranker.rerank([one, empty])
        assert [r.ids for r in out] == [["d"], []]
        assert out[0].trace[-1].usage.calls == 0
    assert llm.calls == 0


def test_long_documents_are_truncated_to_the_per_doc_budget():
    long = Document("long", " ".join(f"w{i}" for i in range(1000)))
    ranking = Ranking(Query("q", "w1"), [ScoredDoc(long, 1.0), ScoredDoc(Document("s", "short text"), 0.5)])
    llm = ScriptedLLM(default="[1] > [2]")
    ListwiseReranker(llm, max_doc_tokens=50).rerank(ranking)
    prompt = llm.seen[-1][-1].content
    assert "[1] w0 w1 " in prompt and " w49\n" in prompt and "w50" not in prompt
    assert "[2] short text" in prompt


def test_reasoning_is_kept_on_docs_traces_and_written_as_jsonl(world, tmp_path):
    docs, queries, qrels, rankings = world
    oracle = OracleLLM(docs, queries, qrels)
    out = GroupwiseReranker(oracle, reasoning=True).rerank(rankings)
    assert all(d.reasoning for d in out[0].docs)
    assert out[0].trace[-1].reasoning
    listwise = ListwiseReranker(oracle, reasoning=True).rerank(rankings[:1])[0]
    assert all(w["reasoning"] for w in listwise.trace[-1].info["windows"])
    path = write_reasoning(out + [listwise], tmp_path / "run.reasoning.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert {r["stage"] for r in rows} == {"groupwise", "listwise"}
    per_doc = [r for r in rows if r["doc_id"] is not None and r["query_id"] == "q1" and r["stage"] == "groupwise"]
    assert [r["doc_id"] for r in per_doc] == out[0].ids
    reasoning_keys, answer_keys = {"query_id", "doc_id", "stage", "reasoning"}, {"query_id", "doc_id", "stage", "where", "answer"}
    assert all(set(r) in (reasoning_keys, answer_keys) for r in rows)
    answers = [r["answer"] for r in rows if r["stage"] == "listwise" and "answer" in r]
    assert answers == [w["text"] for w in listwise.trace[-1].info["answers"]] and all("<think>" in a for a in answers)


# --- prompts ------------------------------------------------------------------------------
def test_prompts_load_by_name_path_or_string(tmp_path):
    assert {"listwise", "setwise", "groupwise", "pointwise-yesno", "pointwise-fine", "pointwise-reason"} <= set(shipped_prompts())
    path = tmp_path / "mine.yaml"
    path.write_text("user: 'Q={query} D={text} {unknown} {\"json\": 1}'\nanswers: ['Yes', 'No']\n")
    template = load_prompt(str(path), "pointwise-yesno", ("query", "text"))
    assert template.answers == ("Yes", "No")
    assert template.render(query="a", text="{query}")[-1].content == 'Q=a D={query} {unknown} {"json": 1}'
    with pytest.raises(InputError, match="lacks the placeholder"):
        load_prompt("Rank these: {documents}", "listwise", ("query", "documents"))
    with pytest.raises(InputError, match="neither a shipped template"):
        load_prompt("no-such-template", "listwise")
    llm = ScriptedLLM(scores={"Yes": -0.1, "No": -3.0})
    out = PointwiseReranker(llm, prompt=str(path)).rerank(small_ranking(3))[0]
    assert llm.seen[0][-1].content.startswith("Q=tumor gene D=Paper")
    assert out.trace[-1].problems == ()
    custom = ScriptedLLM(default="[2] > [1] > [3]")
    ListwiseReranker(custom, prompt="Order for {query}:\n{documents}").rerank(small_ranking(3))
    assert custom.seen[0][-1].content.startswith("Order for tumor gene:\n[1] Paper 0 Study 0")


# --- specs, configs, pipelines ----------------------------------------------------------------
@pytest.mark.parametrize("name", ["pointwise", "listwise", "setwise", "groupwise"])
def test_spec_string_and_config_round_trip(name):
    reranker = registry.build(f"{name}:scripted:judge")
    assert reranker.spec_name == name
    assert isinstance(reranker.llm, LLM) and reranker.llm.model_name == "judge"
    config = reranker.config()
    assert config["params"]["llm"] == "scripted:judge"
    again = registry.build_from_config(json.loads(json.dumps(config)))
    assert again.config() == config
    with pytest.raises(InputError):
        registry.build(name, llm=42)


class Fixed(Retriever):
    """Returns the prepared candidate lists: the retriever is not under test here."""

    spec_name = ""

    def __init__(self, rankings):
        self.rankings = {r.query.id: r for r in rankings}

    def _index(self, corpus):
        pass

    def _retrieve(self, queries, k):
        return [self.rankings[q.id].top(k) for q in queries]


@pytest.mark.parametrize("name", ["pointwise", "listwise", "setwise", "groupwise"])
def test_swapping_rerankers_in_a_pipeline_is_one_string(world, name):
    docs, queries, qrels, rankings = world
    oracle = OracleLLM(docs, queries, qrels)
    pipe = Pipeline([Fixed(rankings), {"spec": name, "params": {"llm": oracle}}], docs, k=40)
    out = pipe.run(queries)
    top40 = [r.top(40) for r in rankings]
    assert [grades(r, qrels)[:10] for r in out] == [ideal(r, qrels)[:10] for r in top40]
    assert out[0].trace[-1].stage == name


def test_reason_mode_averages_samples_and_keeps_their_reasoning():
    ranking = small_ranking(2)
    llm = ScriptedLLM(["<think>a</think>Score: 3", "<think>b</think>Score: 1", "<think>c</think>Score: 0", "Score: 1"])
    out = PointwiseReranker(llm, mode="reason", samples=2, k=3).rerank(ranking)[0]
    assert [(d.id, d.score, d.reasoning) for d in out.docs] == [("d0", 2.0, "a\n---\nb"), ("d1", 0.5, "c")]
    assert out.trace[-1].usage.calls == 2 and out.trace[-1].problems == ()


def test_yesno_and_fine_scores_are_probabilities_from_logprobs():
    import math

    ranking = small_ranking(2)
    yes = PointwiseReranker(ScriptedLLM(scores={"yes": math.log(0.6), "no": math.log(0.2)})).rerank(ranking)[0]
    assert [d.score for d in yes.docs] == pytest.approx([0.75, 0.75])
    fine = PointwiseReranker(ScriptedLLM(scores={"0": math.log(0.1), "1": math.log(0.1), "2": math.log(0.3)}), mode="fine", k=2)
    out = fine.rerank(ranking)[0]
    assert out.docs[0].score == pytest.approx((0.1 * 1 + 0.3 * 2) / 0.5)
    cased = {"yes": math.log(0.01), "Yes": math.log(0.5), "no": math.log(0.01), "No": math.log(0.1)}
    both = PointwiseReranker(ScriptedLLM(scores=cased)).rerank(ranking)[0]
    assert both.docs[0].score == pytest.approx(0.51 / 0.62)
    lower = PointwiseReranker(ScriptedLLM(scores=cased), case_variants=False).rerank(ranking)[0]
    assert lower.docs[0].score == pytest.approx(0.5)
    dead = PointwiseReranker(ScriptedLLM(scores={})).rerank(ranking)[0]
    assert dead.ids == ranking.ids and "probability 0" in dead.trace[-1].problems[0]


def test_oracle_validates_and_reports_unknown_documents(world):
    docs, queries, qrels, rankings = world
    with pytest.raises(InputError, match="error_rate"):
        OracleLLM(docs, queries, qrels, error_rate=1.5)
    oracle = OracleLLM(docs[:50], queries, qrels)
    ListwiseReranker(oracle).rerank(rankings[:1])
    assert oracle.unknown_docs > 0
