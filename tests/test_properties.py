"""Property tests (hypothesis): what must hold for any model answer and any input file.

- every LLM reranker returns a permutation of its input, whatever the model says;
- the answer parsers never raise;
- the dataset loaders raise nothing but InputError, whatever bytes the files hold.
"""

from __future__ import annotations

import itertools
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from personarag import Document, InputError, Query, Ranking, ScoredDoc
from personarag.evaluation.beir import load_beir_dir, read_corpus, read_queries
from personarag.evaluation.bright import load_bright
from personarag.evaluation.lamp import load_lamp, read_lamp_outputs
from personarag.evaluation.qrels import Qrels
from personarag.rerankers.groupwise import GroupwiseReranker
from personarag.rerankers.listwise import ListwiseReranker
from personarag.rerankers.parsing import parse_choice, parse_group_scores, parse_permutation, parse_score, split_reasoning
from personarag.rerankers.pointwise import PointwiseReranker
from personarag.rerankers.setwise import SetwiseReranker
from personarag.testing import ScriptedLLM

FAST = settings(max_examples=int(__import__("os").environ.get("PROP_N", 60)), deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- model answers: free text mixed with the pieces real answers are made of -------------
_numbers = st.one_of(st.integers(-3, 30), st.integers(0, 10**40), st.floats(allow_nan=True)).map(str) | st.just("9" * 5000)
_pieces = st.one_of(
    st.text(max_size=20),
    _numbers,
    _numbers.map(lambda x: f"[{x}]"),
    st.sampled_from(["<think>", "</think>", " > ", "score: ", "Score:", "\n", "A", "[B]", "(c)", "yes", "No", ":", "-", ".", "**"]),
)
answers = st.one_of(st.text(max_size=200), st.lists(_pieces, max_size=15).map("".join))
logprobs = st.floats(allow_nan=True, allow_infinity=True)


def ranking(n: int) -> Ranking:
    docs = [Document(f"d{i}", f"passage {i} on moths and the moon") for i in range(n)]
    return Ranking(Query("q", "why do moths fly to the moon"), [ScoredDoc(d, float(n - i)) for i, d in enumerate(docs)])


RERANKERS = {
    "pointwise-yesno": lambda llm: PointwiseReranker(llm),
    "pointwise-fine": lambda llm: PointwiseReranker(llm, mode="fine", k=4),
    "pointwise-reason": lambda llm: PointwiseReranker(llm, mode="reason", samples=2),
    "listwise": lambda llm: ListwiseReranker(llm, window=4, stride=2, passes=2),
    "setwise-heap": lambda llm: SetwiseReranker(llm, c=3, top_k=4),
    "setwise-bubble": lambda llm: SetwiseReranker(llm, c=3, top_k=3, method="bubblesort"),
    "groupwise": lambda llm: GroupwiseReranker(llm, group_size=3, second_pass=4),
}


@FAST
@given(
    name=st.sampled_from(sorted(RERANKERS)),
    n=st.integers(0, 9),
    said=st.lists(answers, min_size=1, max_size=6),
    scores=st.dictionaries(st.sampled_from(["yes", "Yes", "no", "No", "0", "1", "2", "3", "4"]), logprobs),
)
def test_every_reranker_returns_a_permutation_of_its_input_whatever_the_model_says(name, n, said, scores):
    turn = itertools.count()
    llm = ScriptedLLM(lambda chat: said[next(turn) % len(said)], scores)
    inputs = [ranking(n), ranking(max(0, n - 3))]
    outputs = RERANKERS[name](llm).rerank(inputs)
    assert [sorted(o.ids) for o in outputs] == [sorted(i.ids) for i in inputs]
    assert all(len(o.ids) == len(set(o.ids)) for o in outputs)


@FAST
@given(text=st.one_of(st.none(), answers), n=st.integers(1, 30), low=st.integers(-5, 5), span=st.integers(0, 10))
def test_the_answer_parsers_never_raise(text, n, low, span):
    split_reasoning(text)
    order, _ = parse_permutation(text, n)
    assert sorted(order) == list(range(n))
    labels = [chr(ord("A") + i) for i in range(min(n, 26))]
    choice, _ = parse_choice(text, labels)
    assert choice is None or 0 <= choice < len(labels)
    score, _ = parse_score(text, low, low + span)
    assert score is None or low <= score <= low + span
    scores, _ = parse_group_scores(text, n, low, low + span)
    assert len(scores) == n and all(s is None or low <= s <= low + span for s in scores)


# --- loaders: arbitrary bytes, and JSON of arbitrary shape with the fields they look for ---
_KEYS = st.sampled_from([
    "_id", "id", "text", "title", "metadata", "input", "profile", "user_id", "abstract", "output", "golds",
    "task", "content", "query", "gold_ids", "excluded_ids", "gold_ids_long", "date", "category", "score",
])
_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(10**6), 10**30), st.floats(), st.text(max_size=10),
              st.sampled_from(["\ud800", "N/A", "d1", "q1", "1", "", "LaMP_5"])),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.one_of(_KEYS, st.text(max_size=4)), inner, max_size=6)),
    max_leaves=25,
)


def _dumps(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=True).encode("ascii")


_lines = st.lists(_json, max_size=4).map(lambda values: b"\n".join(_dumps(v) for v in values) + b"\n")
_tsv = st.lists(st.lists(st.sampled_from(["q1", "d1", "0", "1", "0.5", "1e30", "-2", "nan", "score", "", " "]), max_size=5), max_size=5).map(
    lambda rows: ("\n".join("\t".join(r) for r in rows) + "\n").encode()
)
_edge_cases = st.sampled_from([
    b'{"_id": 1' + b"0" * 5000 + b', "id": 1, "text": "t"}\n',  # json.loads: ValueError, not JSONDecodeError
    b"[" * 100_000,  # RecursionError inside json
    b"\xef\xbb\xbf" + b'{"_id": "d1", "text": "t"}\n',  # a byte-order mark
])
file_bytes = st.one_of(
    st.binary(max_size=200), _lines, _json.map(_dumps), _tsv, _edge_cases,
    _lines.map(lambda b: b[:-3] + b"\xff\xfe" + b[-3:]),
)


def _only_input_errors(load) -> None:
    try:
        load()
    except InputError:
        pass


@FAST
@given(corpus=file_bytes, queries=file_bytes, qrels=file_bytes)
def test_beir_loaders_raise_only_input_errors_on_arbitrary_bytes(corpus, queries, qrels):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "qrels").mkdir()
        (root / "corpus.jsonl").write_bytes(corpus)
        (root / "queries.jsonl").write_bytes(queries)
        (root / "qrels" / "test.tsv").write_bytes(qrels)
        _only_input_errors(lambda: read_corpus(root / "corpus.jsonl"))
        _only_input_errors(lambda: read_queries(root / "queries.jsonl"))
        _only_input_errors(lambda: Qrels.read(root / "qrels" / "test.tsv"))
        _only_input_errors(lambda: load_beir_dir(root))


@FAST
@given(questions=file_bytes, outputs=file_bytes, task=st.sampled_from(["LaMP-1", "LaMP-2", "LaMP-3", "LaMP-5", "LaMP-7"]))
def test_lamp_loaders_raise_only_input_errors_on_arbitrary_bytes(questions, outputs, task):
    with tempfile.TemporaryDirectory() as tmp:
        q, o = Path(tmp) / "questions.json", Path(tmp) / "outputs.json"
        q.write_bytes(questions)
        o.write_bytes(outputs)
        _only_input_errors(lambda: read_lamp_outputs(o, task))
        _only_input_errors(lambda: load_lamp(task, q))
        _only_input_errors(lambda: load_lamp(task, q, o))


@FAST
@given(examples=file_bytes, documents=file_bytes, long=st.booleans())
def test_the_bright_loader_raises_only_input_errors_on_arbitrary_bytes(examples, documents, long):
    with tempfile.TemporaryDirectory() as tmp:
        task = Path(tmp) / "biology"
        task.mkdir()
        (task / "examples.jsonl").write_bytes(examples)
        (task / ("long_documents.jsonl" if long else "documents.jsonl")).write_bytes(documents)
        _only_input_errors(lambda: load_bright("biology", tmp, long_documents=long))
