"""Reliability defects of issue 9 (malformed answers, bad files, late failures), one test each.

Each test failed before its fix: a bare traceback, a silent loss, or a failure mid-run.
"""

from __future__ import annotations

import json
import math
import os
import tracemalloc
from pathlib import Path

import pytest

from personarag import Document, InputError, Pipeline, Query, Ranking, ScoredDoc, registry
from personarag.evaluation.beir import read_corpus, read_queries
from personarag.evaluation.bright import load_bright
from personarag.evaluation.lamp import load_lamp
from personarag.evaluation.metrics import evaluate
from personarag.evaluation.qrels import Qrels
from personarag.llm.cache import LLMCache, request_key
from personarag.pipeline import load_config
from personarag.rerankers.groupwise import GroupwiseReranker
from personarag.rerankers.listwise import ListwiseReranker
from personarag.rerankers.parsing import parse_group_scores, parse_permutation
from personarag.rerankers.pointwise import PointwiseReranker
from personarag.testing import ScriptedLLM

HUGE = "9" * 5000  # int() refuses more than 4,300 digits


def rankings(n: int = 5) -> list[Ranking]:
    docs = [Document(f"d{i}", f"passage number {i} about moths") for i in range(n)]
    return [Ranking(Query("q1", "moths and the moon"), [ScoredDoc(d, float(n - i)) for i, d in enumerate(docs)])]


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


# --- defect 3: a number longer than 4,300 digits in a model answer ----------------------
def test_parsers_read_a_5000_digit_identifier_as_out_of_range():
    order, parsed = parse_permutation(f"[{HUGE}] > [2] > [1]", 3)
    assert order == [1, 0, 2]
    assert any("outside 1..3" in p for p in parsed.problems)
    scores, parsed = parse_group_scores(f"[{HUGE}] score: 3\n[1] score: {HUGE}\n[2]: 4", 2, 0, 10)
    assert scores == [10.0, 4.0]
    assert any("outside 1..2" in p for p in parsed.problems)


@pytest.mark.parametrize("make, answer", [
    (lambda llm: ListwiseReranker(llm, window=3, stride=1), f"[{HUGE}] > [2]"),
    (lambda llm: GroupwiseReranker(llm, group_size=3), f"[{HUGE}] score: 5\n[2] score: 7"),
])
def test_listwise_and_groupwise_keep_running_on_a_5000_digit_answer(make, answer):
    out = make(ScriptedLLM(default=answer)).rerank(rankings())[0]
    assert sorted(out.ids) == [f"d{i}" for i in range(5)]
    assert any("outside" in p for p in out.trace[-1].problems)


# --- defect 6: a lone surrogate in a document --------------------------------------------
def test_a_lone_surrogate_in_a_corpus_is_rejected_at_load_naming_file_line_and_id(tmp_path):
    path = write(tmp_path / "corpus.jsonl", '{"_id": "a", "text": "fine"}\n{"_id": "b7", "text": "bad \\ud800 text"}\n')
    with pytest.raises(InputError, match=r"corpus\.jsonl:2.*'b7'.*surrogate"):
        read_corpus(path)


def test_the_llm_cache_keys_and_stores_text_with_a_lone_surrogate(tmp_path):
    llm = ScriptedLLM(default="answer \udc80", cache_dir=str(tmp_path))
    prompt = "document with a lone surrogate \ud800 in it"
    assert llm.generate([prompt])[0].text == "answer \udc80"
    again = ScriptedLLM(default="other", cache_dir=str(tmp_path)).generate([prompt])[0]
    assert again.cached and again.text == "answer \udc80"
    assert request_key({"m": "é"}) == request_key({"m": "é"})  # ordinary text keeps its key


# --- defect 7: a headerless qrels file whose first grade is 0.5 -------------------------
def test_a_fractional_first_grade_is_an_error_not_a_header(tmp_path):
    path = write(tmp_path / "qrels.tsv", "q1\td1\t0.5\nq1\td2\t1\n")
    with pytest.raises(InputError, match=r"qrels\.tsv:1: relevance must be an integer, got '0\.5'"):
        Qrels.read(path)
    headed = write(tmp_path / "headed.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t2\n")
    assert Qrels.read(headed).to_dict() == {"q1": {"d1": 2}}


# --- defect 8: invalid UTF-8 names the file and the line --------------------------------
@pytest.mark.parametrize("name, good", [
    ("corpus.jsonl", b'{"_id": "d1", "text": "t"}\n'),
    ("queries.jsonl", b'{"_id": "q1", "text": "t"}\n'),
    ("qrels.tsv", b"q1\td1\t1\n"),
])
def test_invalid_utf8_in_beir_files_names_file_and_line(tmp_path, name, good):
    path = write(tmp_path / name, good + b'{"_id": "x\xff\xfe", "text": "t"}\n' if name != "qrels.tsv" else good + b"q\xff\td1\t1\n")
    reader = {"corpus.jsonl": read_corpus, "queries.jsonl": read_queries, "qrels.tsv": Qrels.read}[name]
    with pytest.raises(InputError, match=rf"{name}:2: not valid UTF-8"):
        reader(path)


def test_invalid_utf8_in_a_run_file_or_training_examples_names_file_and_line(tmp_path):
    from personarag.evaluation import Run
    from personarag.training.data import read_examples

    run = write(tmp_path / "run.trec", b"q1 Q0 d1 1 2.0 r\nq1 Q0 d\xff 2 1.0 r\n")
    with pytest.raises(InputError, match=r"run\.trec:2: not valid UTF-8"):
        Run.read_trec(run)
    example = b'{"query_id": "q", "query_text": "t", "doc_id": "d", "doc_text": "t", "label": 1}\n'
    examples = write(tmp_path / "examples.jsonl", example + example.replace(b'"t"', b'"\xe9"', 1))
    with pytest.raises(InputError, match=r"examples\.jsonl:2: not valid UTF-8"):
        read_examples(examples)


def test_invalid_utf8_in_a_yaml_config_names_file_and_line(tmp_path):
    path = write(tmp_path / "run.yaml", b"k: 10\nretriever: bm25\nname: caf\xe9\n")
    with pytest.raises(InputError, match=r"run\.yaml:3: not valid UTF-8"):
        load_config(path)


# --- defect 10: late failures and unclear errors ------------------------------------------
def test_an_unknown_component_parameter_lists_the_valid_ones():
    with pytest.raises(InputError, match=r"unknown parameter 'windw' \(did you mean 'window'\?\); valid parameters of 'listwise': llm, window"):
        registry.build({"spec": "listwise", "params": {"llm": "scripted:x", "windw": 10}})
    with pytest.raises(InputError, match=r"'pointwise' needs the parameter 'llm'"):
        registry.build("pointwise")


def test_a_huge_grade_is_an_input_error_not_a_system_error(tmp_path):
    path = write(tmp_path / "qrels.tsv", "q1\td1\t1e30\n")
    with pytest.raises(InputError, match=r"qrels\.tsv:1: relevance 1e30 is out of range"):
        Qrels.read(path)
    with pytest.raises(InputError, match="out of range"):
        evaluate({"q1": [("d1", 1.0)]}, {"q1": {"d1": 10**30}}, ["nDCG@10"])


def test_an_llm_that_cannot_answer_or_a_missing_model_fails_validation_before_any_run(tmp_path):
    with pytest.raises(InputError, match="no responses, default or scores"):
        registry.build("pointwise:scripted").validate()
    missing = tmp_path / "no-such-model"
    with pytest.raises(InputError, match=rf"model path {missing} does not exist"):
        registry.build(f"pointwise:transformers:{missing}").validate()
    with pytest.raises(InputError, match="does not exist"):
        registry.build(f"listwise:{missing}/model.gguf").validate()
    with pytest.raises(InputError, match="no responses, default or scores"):
        Pipeline(["bm25", "cross-encoder:x/y", "listwise:scripted"]).validate()  # builds cheaply; fails before retrieval
    registry.build({"spec": "pointwise", "params": {"llm": {"spec": "scripted", "params": {"default": "yes"}}}}).validate()


def test_an_unusable_cache_folder_is_a_clear_error(tmp_path):
    blocker = write(tmp_path / "cache", "a file, not a folder")
    with pytest.raises(InputError, match=rf"LLM cache folder {blocker} is not usable"):
        LLMCache(blocker)
    with pytest.raises(InputError, match="LLM cache folder"):
        ScriptedLLM(default="x", cache_dir=str(blocker)).validate()


def test_a_null_field_is_reported_as_null_not_missing(tmp_path):
    path = write(tmp_path / "corpus.jsonl", '{"_id": "d1", "text": null}\n')
    with pytest.raises(InputError, match=r"corpus\.jsonl:1: field 'text' is null"):
        read_corpus(path)
    questions = write(tmp_path / "q.json", json.dumps([{"id": "1", "input": "x", "profile": [{"id": "p", "abstract": None, "title": "t"}]}]))
    with pytest.raises(InputError, match="field 'abstract' is null"):
        load_lamp("LaMP-5", questions)


def test_bright_duplicate_example_ids_are_named(tmp_path):
    task = tmp_path / "biology"
    write(task / "documents.jsonl", '{"id": "doc1", "content": "c"}\n')
    example = {"query": "q", "gold_ids": ["doc1"], "excluded_ids": []}
    write(task / "examples.jsonl", "\n".join(json.dumps({"id": i, **example}) for i in ["e1", "e2", "e1"]) + "\n")
    with pytest.raises(InputError, match=r"examples\.jsonl:3: duplicate example id 'e1' \(first on .*examples\.jsonl:1\)"):
        load_bright("biology", tmp_path)


def test_a_positive_infinite_logprob_is_a_recorded_problem():
    llm = ScriptedLLM(scores={"yes": math.inf, "Yes": -1.0, "no": -1.0, "No": -1.0})
    out = PointwiseReranker(llm).rerank(rankings(2))[0]
    problems = out.trace[-1].problems
    assert len(problems) == 2 and all("log-probability" in p and "inf" in p for p in problems)


def test_opening_the_llm_cache_does_not_read_the_whole_file_into_memory(tmp_path):
    cache = LLMCache(tmp_path)
    value = "x" * 20_000
    for batch in range(10):
        cache.put_many({f"{batch}-{i}": value for i in range(100)})  # 20 MB on disk
    assert os.path.getsize(cache.path) > 20_000_000
    tracemalloc.start()
    fresh = LLMCache(tmp_path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(fresh) == 1000 and fresh.get("9-99") == value
    assert peak < 2_000_000, f"opening a 20 MB cache peaked at {peak / 1e6:.1f} MB"


def test_a_lone_surrogate_in_lamp_text_is_rejected_naming_the_example(tmp_path):
    record = {"id": "7", "input": "x", "profile": [{"id": "p1", "title": "t", "abstract": "bad \ud800"}]}
    questions = write(tmp_path / "q.json", json.dumps([record]))
    with pytest.raises(InputError, match=r"example '7', profile item 0: field 'abstract' contains a lone surrogate \(\\ud800\)"):
        load_lamp("LaMP-5", questions)


def test_a_stalled_beir_download_times_out_instead_of_hanging(tmp_path):
    import socket
    import time

    from personarag.evaluation.beir import download_beir

    with socket.socket() as server:  # loopback only: listens, never answers
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        url = f"http://127.0.0.1:{server.getsockname()[1]}/{{name}}.zip"
        start = time.perf_counter()
        with pytest.raises(InputError, match=r"could not download BEIR dataset 'scifact'.*timed out"):
            download_beir("scifact", cache_dir=tmp_path, url=url, timeout=0.5)
        assert time.perf_counter() - start < 10


def test_validation_accepts_existing_folders_and_hub_names(tmp_path, monkeypatch):
    from personarag.llm import load_llm

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    (tmp_path / "model").mkdir()
    load_llm(f"transformers:{tmp_path / 'model'}", cache_dir=None).validate()
    load_llm("HuggingFaceTB/SmolLM2-135M-Instruct", cache_dir=None).validate()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="HF_HUB_OFFLINE is set, but it is not in the hub cache"):
        load_llm("someone/not-downloaded", cache_dir=None).validate()
