"""The LLM rows of benchmarks/lamp_table.py: which rows each task gets and which are n/a, the
seeded subset shared by every cell, a cell folder's usage, and the rows' markdown. No data needed."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "lamp_llm_rows.py"


@pytest.fixture(scope="module")
def rows_module():
    spec = importlib.util.spec_from_file_location("lamp_llm_rows", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["lamp_llm_rows"] = module
    spec.loader.exec_module(module)
    return module


def test_label_task_rows_with_its_trained_scorer_and_reranker(rows_module):
    rows = rows_module.llm_rows("LaMP-3", "ENC", scorer="S", scorer_task="LaMP-3", reranker="R", reranker_task="LaMP-3")
    assert [r.name for r in rows] == ["none", "history:bm25", "history:bm25 raw", "recency", "history:dense", "collaborative",
                                     "collaborative+scorer", "+personalized reranker", "+summary"]
    by_name = {r.name: r for r in rows}
    assert all(r.note is None for r in rows)
    assert [r.name for r in rows if not r.calibrated] == ["history:bm25 raw"]
    assert by_name["none"].retriever is None
    assert by_name["history:dense"].retriever == "history:dense:ENC"
    assert by_name["collaborative+scorer"].retriever == {"spec": "collaborative:ENC", "params": {"scorer": "S"}}
    assert [r.name for r in rows if r.user_store] == ["collaborative", "collaborative+scorer"]
    assert by_name["+personalized reranker"].reranker == "personal-cross-encoder:R"
    assert by_name["+personalized reranker"].retriever == "history:bm25"
    assert by_name["+summary"].summary and by_name["+summary"].retriever == "history:bm25"


def test_trained_rows_are_na_on_other_tasks(rows_module):
    rows = {r.name: r for r in rows_module.llm_rows("LaMP-2", "ENC", scorer="S", scorer_task="LaMP-3",
                                                       reranker="R", reranker_task="LaMP-3")}
    assert rows["collaborative+scorer"].note == "n/a: no trained scorer for this task"
    assert rows["+personalized reranker"].note == "n/a: no trained personalized reranker for this task"
    assert rows["collaborative+scorer"].retriever is None and rows["+personalized reranker"].reranker is None
    assert rows["history:bm25 raw"].note is None


def test_generation_tasks_have_no_raw_row_and_no_encoder_drops_dense_rows(rows_module):
    names = [r.name for r in rows_module.llm_rows("LaMP-4", None)]
    assert names == ["none", "history:bm25", "recency", "+personalized reranker", "+summary"]


def test_bound_retriever_adds_the_store_and_leaves_the_row_untouched(rows_module):
    scorer_row = {"spec": "collaborative:ENC", "params": {"scorer": "S"}}
    bound = rows_module.bound_retriever(scorer_row, "/runs/LaMP_3/users.db")
    assert bound == {"spec": "collaborative:ENC", "params": {"scorer": "S", "store": "/runs/LaMP_3/users.db"}}
    assert scorer_row == {"spec": "collaborative:ENC", "params": {"scorer": "S"}}  # rows are shared between models
    assert rows_module.bound_retriever("collaborative:ENC", "u.db") == {"spec": "collaborative:ENC", "params": {"store": "u.db"}}


def test_subset_is_seeded_sorted_and_capped(rows_module):
    first = rows_module.subset_indices(298, 40, 0)
    assert first == rows_module.subset_indices(298, 40, 0)
    assert first == sorted(first) and len(set(first)) == 40 and all(0 <= i < 298 for i in first)
    assert first != rows_module.subset_indices(298, 40, 1)
    assert rows_module.subset_indices(7, 40, 0) == list(range(7))


def test_usage_totals_and_finished(rows_module, tmp_path):
    assert rows_module.usage_totals(tmp_path) == {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cached_calls": 0}
    records = [{"id": "a", "usage": {"calls": 1, "prompt_tokens": 500, "completion_tokens": 3, "cached_calls": 0}},
               {"id": "b", "usage": {"calls": 1, "prompt_tokens": 20, "completion_tokens": 0, "cached_calls": 1}}, {"id": "c"}]
    (tmp_path / "retrieved.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    assert rows_module.usage_totals(tmp_path) == {"calls": 2, "prompt_tokens": 520, "completion_tokens": 3, "cached_calls": 1}
    assert not rows_module.finished(tmp_path)
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "per_query.json").write_text("{}")
    assert rows_module.finished(tmp_path)


def test_markdown_prints_notes_and_values(rows_module):
    columns = (("mae", "mae"), ("rmse", None))
    rows = [{"model": "m", "row": "none", "examples": 40, "subset": {"mae": {"value": 0.5, "se": 0.1, "n": 40},
                                                                   "rmse": {"value": 0.9, "se": None, "n": 40}},
             "heldout": {"mae": {"value": 0.4, "se": 0.2, "n": 30}}, "seconds": 12.4,
             "usage": {"calls": 40, "prompt_tokens": 20000}},
            {"model": "m", "row": "+summary", "examples": 40, "subset": None, "note": "not run yet (resumable)"}]
    lines = rows_module.llm_markdown("LaMP-3", rows, columns)
    assert lines[2] == ("| model | row | examples | mae | rmse | mae (not trained on by the scorer, n) | seconds (all invocations) "
                        "| LLM calls | prompt tokens |")
    assert lines[4] == "| m | none | 40 | 0.500 ± 0.100 | 0.900 | 0.400 ± 0.200 (30) | 12 | 40 | 20000 |"
    assert lines[5] == "| m | +summary | 40 | not run yet (resumable) | not run yet (resumable) |  |  |  |  |"


def test_task_user_store_imports_the_split_once_per_process(tmp_path, capsys, rows_module):
    from argparse import Namespace

    from conftest import FIXTURES
    from personarag.evaluation.lamp import load_lamp

    spec = importlib.util.spec_from_file_location("lamp_table", _PATH.with_name("lamp_table.py"))
    table = importlib.util.module_from_spec(spec)
    sys.modules["lamp_table"] = table  # its dataclasses look the module up
    spec.loader.exec_module(table)
    folder = FIXTURES / "lamp" / "LaMP_2"
    full = load_lamp("LaMP-2", folder / "dev_questions.json", folder / "dev_outputs.json")
    args = Namespace(runs_dir=str(tmp_path))
    first = table.task_user_store(folder, full, args)
    second = table.task_user_store(folder, full, args)
    assert first == second == str(tmp_path / "LaMP_2" / "users.db")
    assert capsys.readouterr().out.count("user store") == 1
    Path(first).unlink()  # a store removed behind the table's back is imported again
    assert table.task_user_store(folder, full, args) == first and Path(first).is_file()
    assert f"{len(full.users)} users" in capsys.readouterr().out
