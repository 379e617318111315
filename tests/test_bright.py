"""BRIGHT loader: layouts, gold ids, excluded ids, and the real examples of all 12 tasks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import shared_data
from personarag.errors import InputError
from personarag.evaluation.bright import LONG_DOCUMENT_TASKS, TASKS, load_bright, remove_excluded
from personarag.evaluation.metrics import evaluate
from personarag.evaluation.runs import Run

EXAMPLES = [
    {"query": "why do moths fly to lamps", "reasoning": "phototaxis", "id": "0", "excluded_ids": ["N/A"],
     "gold_ids_long": ["moth/Phototaxis.txt"], "gold_ids": ["moth/Phototaxis_0.txt", "moth/Phototaxis_1.txt"],
     "gold_answer": "They navigate by the moon."},
    {"query": "sum of two numbers in an array", "reasoning": "hash map", "id": "1",
     "excluded_ids": ["leetcode/leetcode_1.txt"], "gold_ids_long": ["N/A"], "gold_ids": ["leetcode/leetcode_167.txt"],
     "gold_answer": "N/A"},
]
DOCUMENTS = [
    {"id": "moth/Phototaxis_0.txt", "content": "Phototaxis is movement toward light."},
    {"id": "moth/Phototaxis_1.txt", "content": "Moths use transverse orientation to the moon."},
    {"id": "leetcode/leetcode_167.txt", "content": "Two sum II: sorted input array, two pointers."},
    {"id": "leetcode/leetcode_1.txt", "content": "Two sum: find two numbers adding to target."},
    {"id": "other.txt", "content": "Unrelated text about volcanoes."},
]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture()
def bright_dir(tmp_path: Path) -> Path:
    write_jsonl(tmp_path / "biology" / "examples.jsonl", EXAMPLES)
    write_jsonl(tmp_path / "biology" / "documents.jsonl", DOCUMENTS)
    write_jsonl(tmp_path / "biology" / "long_documents.jsonl", [{"id": "moth/Phototaxis.txt", "content": "long"}])
    write_jsonl(tmp_path / "biology" / "gpt4_reason.jsonl", [dict(e, query=f"reasoned: {e['query']}") for e in EXAMPLES])
    return tmp_path


def test_jsonl_layout_gold_and_excluded(bright_dir: Path) -> None:
    task = load_bright("biology", bright_dir)
    assert [q.id for q in task.queries] == ["0", "1"]
    assert task.queries[1].text == "sum of two numbers in an array"
    assert dict(task.qrels["0"]) == {"moth/Phototaxis_0.txt": 1, "moth/Phototaxis_1.txt": 1}
    assert task.excluded["0"] == frozenset()  # "N/A" is not an id
    assert task.excluded["1"] == frozenset({"leetcode/leetcode_1.txt"})
    assert len(task.corpus) == 5


def test_excluded_ids_are_removed_before_scoring(bright_dir: Path) -> None:
    task = load_bright("biology", bright_dir)
    run = Run({"0": [("moth/Phototaxis_0.txt", 3.0), ("moth/Phototaxis_1.txt", 2.0)],
               "1": [("leetcode/leetcode_1.txt", 9.0), ("leetcode/leetcode_167.txt", 5.0)]})
    cleaned = task.remove_excluded(run)
    assert [d for d, _ in cleaned["1"]] == ["leetcode/leetcode_167.txt"]
    before = evaluate(run, task.qrels, ["nDCG@10"]).aggregate["nDCG@10"]
    after = evaluate(cleaned, task.qrels, ["nDCG@10"]).aggregate["nDCG@10"]
    assert after == pytest.approx(1.0)  # both queries now have their gold docs on top
    assert before < 1.0


def test_long_documents_and_reasoning_queries(bright_dir: Path) -> None:
    long = load_bright("biology", bright_dir, long_documents=True)
    assert dict(long.qrels["0"]) == {"moth/Phototaxis.txt": 1}
    assert "1" not in long.qrels  # its long gold is "N/A": nothing to judge
    reasoned = load_bright("biology", bright_dir, reasoning="gpt4_reason")
    assert reasoned.queries[0].text == "reasoned: why do moths fly to lamps"
    assert reasoned.queries[0].meta["original_query"] == "why do moths fly to lamps"


def test_parquet_snapshot_layout(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    for config, rows in (("examples", EXAMPLES), ("documents", DOCUMENTS)):
        (tmp_path / config).mkdir()
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / config / "biology-00000-of-00001.parquet")
    task = load_bright("biology", tmp_path)
    assert len(task.corpus) == 5 and len(task.queries) == 2
    assert task.excluded["1"] == frozenset({"leetcode/leetcode_1.txt"})


def test_bad_input(bright_dir: Path) -> None:
    with pytest.raises(InputError, match="unknown BRIGHT task 'chemistry'; valid tasks: biology"):
        load_bright("chemistry", bright_dir)
    with pytest.raises(InputError, match="has no long documents"):
        load_bright("leetcode", bright_dir, long_documents=True)
    write_jsonl(bright_dir / "economics" / "examples.jsonl", EXAMPLES)  # examples but no documents
    with pytest.raises(InputError, match="'documents' for task 'economics' not found.*xlangai/BRIGHT"):
        load_bright("economics", bright_dir)
    with pytest.raises(InputError, match="unknown BRIGHT reasoning config"):
        load_bright("biology", bright_dir, reasoning="gpt5_reason")
    (bright_dir / "biology" / "documents.jsonl").write_text('{"id": "a", "content": "x"}\n{"id": "b"\n')
    with pytest.raises(InputError, match=r"documents.jsonl:2: not valid JSON"):
        load_bright("biology", bright_dir)


def _documents_from_gold(examples: list[dict]) -> list[dict]:
    """A stand-in corpus in the documents layout: every gold and excluded id, with text
    taken from the example that points at it, so retrieval has something real to find."""
    docs: dict[str, str] = {}
    for example in examples:
        text = example["reasoning"] if example["reasoning"] not in ("", "empty") else example["query"]
        for doc_id in example["gold_ids"] + [d for d in example["excluded_ids"] if d != "N/A"]:
            docs.setdefault(doc_id, text)
    return [{"id": doc_id, "content": text} for doc_id, text in docs.items()]


@pytest.mark.slow
def test_real_examples_of_all_tasks(tmp_path: Path) -> None:
    from personarag.retrievers.bm25 import BM25Retriever

    root = shared_data("bright")
    counts = {}
    for name in TASKS:
        lines = (root / name / "examples.jsonl").read_text(encoding="utf-8").splitlines()
        examples = [json.loads(line) for line in lines if line.strip()]
        write_jsonl(tmp_path / name / "examples.jsonl", examples)
        write_jsonl(tmp_path / name / "documents.jsonl", _documents_from_gold(examples))
        task = load_bright(name, tmp_path)
        counts[name] = len(task.queries)
        gold = {q: set(d for d in e["gold_ids"]) for q, e in ((str(e["id"]), e) for e in examples)}
        assert {q: set(task.qrels[q]) for q in task.qrels} == {q: g for q, g in gold.items() if g}
        with_exclusions = sum(1 for ids in task.excluded.values() if ids)
        assert (with_exclusions > 0) == (name in ("leetcode", "aops", "theoremqa_questions")), name
        if name == "leetcode":
            retriever = BM25Retriever()
            retriever.index(task.corpus)
            run = Run.from_rankings(retriever.retrieve(task.queries, k=10))
            cleaned = task.remove_excluded(run)
            def leaks(r: Run) -> int:
                return sum(1 for q, ranked in r.items() for d, _ in ranked if d in task.excluded[q])
            assert leaks(run) > 0  # excluded docs carry the query's own text, so BM25 ranks them high
            assert leaks(cleaned) == 0
            before = evaluate(run, task.qrels, ["nDCG@10"]).aggregate["nDCG@10"]
            assert evaluate(cleaned, task.qrels, ["nDCG@10"]).aggregate["nDCG@10"] >= before
    assert counts == {"biology": 103, "earth_science": 116, "economics": 103, "psychology": 101, "robotics": 101,
                      "stackoverflow": 117, "sustainable_living": 108, "leetcode": 142, "pony": 112, "aops": 111,
                      "theoremqa_theorems": 76, "theoremqa_questions": 194}
    assert set(LONG_DOCUMENT_TASKS) < set(TASKS)


def test_cli_eval_bright_writes_runs_without_excluded_ids(bright_dir: Path, tmp_path: Path) -> None:
    from personarag.cli import main

    write_jsonl(bright_dir / "leetcode" / "examples.jsonl", [EXAMPLES[1]])
    write_jsonl(bright_dir / "leetcode" / "documents.jsonl", DOCUMENTS)
    out = tmp_path / "out"
    argv = ["eval", "bright", "--dataset-dir", str(bright_dir), "--task", "biology", "--task", "leetcode",
            "--retriever", "bm25", "--k", "5", "--output-dir", str(out)]
    assert main(argv) == 0
    leetcode_run = Run.read_trec(out / "leetcode" / "run.trec")
    assert "leetcode/leetcode_1.txt" not in [d for d, _ in leetcode_run["1"]]  # excluded, though BM25 finds it
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"biology", "leetcode", "average"}
    assert metrics["leetcode"]["nDCG@10"] == pytest.approx(1.0)
    expected = (metrics["biology"]["nDCG@10"] + metrics["leetcode"]["nDCG@10"]) / 2
    assert metrics["average"]["nDCG@10"] == pytest.approx(expected)
    config = json.loads((out / "config.json").read_text())
    assert config["tasks"] == ["biology", "leetcode"]
    assert main(["eval", "bright", "--config", str(out / "config.json"), "--output-dir", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text()) == metrics


def test_cli_eval_bright_with_query_rewriter_keeps_reasoning(bright_dir: Path, tmp_path: Path) -> None:
    from personarag.cli import main

    config = tmp_path / "run.yaml"
    config.write_text(
        f"dataset_dir: {bright_dir}\ntasks: [biology]\nretriever: bm25\nk: 3\n"
        "query_rewriter: {spec: scripted, params: {default: 'moon orientation of moths'}}\n"
    )
    out = tmp_path / "out"
    assert main(["eval", "bright", "--config", str(config), "--output-dir", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "biology" / "reasoning.jsonl").read_text().splitlines()]
    assert {r["query_id"] for r in rows} == {"0", "1"}
    assert all(r["stage"] == "rewrite" and r["reasoning"] == "moon orientation of moths" for r in rows)
    assert json.loads((out / "config.json").read_text())["pipeline"]["stages"][0]["spec"] == "rewrite"
    bad = main(["eval", "bright", "--dataset-dir", str(bright_dir), "--task", "chemistry", "--retriever", "bm25",
                "--output-dir", str(tmp_path / "bad")])
    assert bad == 2
