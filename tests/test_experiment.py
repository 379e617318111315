"""The experiment runner and the eval commands over it: several systems, resume, content identity,
the output-folder lock and checks, and early validation (defects 2, 5 and parts of 10 of issue 9)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from personarag import Pipeline, registry
from personarag.cli import main
from personarag.evaluation.beir import load_beir
from personarag.evaluation.lamp import load_lamp
from personarag.evaluation.lamp_runner import run_lamp
from personarag.experiment import Experiment, Measure, RankingDataset
from personarag.experiment.artifacts import LOCK_FILE, FolderLock, write_json
from personarag.experiment.measures import paired_p_value
from personarag.generators.lamp import LaMPGenerator
from personarag.testing import ScriptedLLM
from personarag.retrievers.base import Retriever
from test_cli import TextOverlap

FIXTURES = Path(__file__).parent / "fixtures"
BEIR = FIXTURES / "beir_mini"
LAMP3 = FIXTURES / "lamp" / "LaMP_3"


class Overlap(TextOverlap):
    """Documents by the number of lowercase words they share with the query; ties in corpus order."""

    spec_name = "test-exp-overlap"


class Exploding(Retriever):
    """Fails the moment anything is indexed: proves a check ran before any data work."""

    spec_name = "test-exp-exploding"

    def _index(self, corpus):
        raise AssertionError("indexing started before the pipeline was checked")

    def _retrieve(self, queries, k):
        raise AssertionError("retrieval started before the pipeline was checked")


@pytest.fixture(autouse=True)
def stages(monkeypatch):
    for name, cls in (("test-exp-overlap", "Overlap"), ("test-exp-exploding", "Exploding")):
        monkeypatch.setitem(registry.REGISTRY, name, registry.Entry("retriever", f"{__name__}:{cls}", None, ""))


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---- the library runner ---------------------------------------------------------------------------
def test_two_systems_on_the_same_queries_with_a_baseline_table(tmp_path):
    data = RankingDataset.from_beir(load_beir(BEIR))
    systems = [Pipeline(["test-exp-overlap"], k=3), Pipeline(["test-exp-overlap"], k=1)]
    result = Experiment(systems, data, ["MRR@10", "Recall@2"], names=["k3", "k1"], baseline="k3",
                        output_dir=tmp_path, progress=False).run()
    k3, k1 = result.systems["k3"], result.systems["k1"]
    # by hand (see tests/test_cli.py): k=3 finds the relevant doc at rank 1, 1 and 2; k=1 loses q2's
    assert k3.metrics["MRR@10"] == pytest.approx(2.5 / 3) and k1.metrics["MRR@10"] == pytest.approx(2 / 3)
    assert result.comparison["k1"]["MRR@10"]["delta"] == pytest.approx(-0.5 / 3)
    assert result.comparison["k1"]["MRR@10"]["better"] is False
    assert "k3" in result.table and "(baseline)" in result.table and "MRR@10↑" in result.table
    saved = json.loads((tmp_path / "comparison.json").read_text())
    assert saved["baseline"] == "k3" and set(saved["systems"]) == {"k3", "k1"}
    for name in ("k3", "k1"):
        assert {"run.trec", "metrics.json", "per_query.json", "stats.json", "config.json", "rankings.jsonl"} <= {
            p.name for p in (tmp_path / name).iterdir()}
    again = Experiment(systems, data, ["MRR@10", "Recall@2"], names=["k3", "k1"], baseline="k3",
                       output_dir=tmp_path, progress=False).run()
    assert again.systems["k1"].ran == 0 and again.systems["k1"].metrics == k1.metrics  # resumed, nothing redone


def test_measures_know_their_direction_and_the_paired_test_separates_real_differences():
    assert Measure.of("mae").higher_is_better is False and Measure.of("RMSE").better(0.5, 0.7)
    assert Measure.of("nDCG@10").higher_is_better and Measure.of("nDCG@10").better(0.7, 0.5)
    assert paired_p_value([0.5, 0.6, 0.7], [0.5, 0.6, 0.7]) == 1.0
    better = [0.9 + 0.001 * i for i in range(30)]
    worse = [0.1 + 0.002 * i for i in range(30)]
    assert paired_p_value(better, worse) < 0.001
    assert paired_p_value([1.0], [0.0]) is None


# ---- resume and content identity --------------------------------------------------------------------
def test_a_torn_multibyte_last_line_is_dropped_and_redone(tmp_path):
    """Defect 2: resume crashed with UnicodeDecodeError on a last line cut inside a character."""
    out = tmp_path / "out"
    dataset = load_lamp("LaMP-3", LAMP3 / "dev_questions.json", LAMP3 / "dev_outputs.json")
    run_lamp(dataset, Pipeline([LaMPGenerator(ScriptedLLM(default="4 étoiles"), task="LaMP-3")]), out, progress=False)
    predictions = out / "predictions.jsonl"
    data = predictions.read_bytes()
    last = data.rstrip(b"\n").rsplit(b"\n", 1)[1]
    cut = last.index("é".encode()) + 1  # inside the two bytes of "é"
    predictions.write_bytes(data[: len(data) - len(last) - 1] + last[:cut])
    with pytest.raises(UnicodeDecodeError):
        predictions.read_text(encoding="utf-8")
    llm = ScriptedLLM(default="4 étoiles")
    result = run_lamp(dataset, Pipeline([LaMPGenerator(llm, task="LaMP-3")]), out, progress=False)
    assert result.generated == 1 and llm.calls == 1
    assert [r["id"] for r in lines(predictions)] == ["3-1", "3-2", "3-3"]
    assert [r["prediction"] for r in lines(predictions)] == ["4 étoiles"] * 3


def lamp_args(questions: Path, outputs: Path | None, out: Path) -> list[str]:
    generator = json.dumps({"spec": "lamp", "params": {"llm": {"spec": "scripted", "params": {"default": "4"}}}})
    config = out.parent / "lamp.json"
    config.write_text(json.dumps({"generator": json.loads(generator)}))
    args = ["eval", "lamp", "--config", str(config), "--task", "LaMP-3", "--questions", str(questions),
            "--retriever", "recency", "--output-dir", str(out)]
    return args + (["--outputs", str(outputs)] if outputs else [])


def test_lamp_refuses_stale_predictions_after_the_outputs_changed(tmp_path, capsys):
    """Defect 5: a rerun after the questions/outputs files changed resumed the stale predictions."""
    data = tmp_path / "data"
    shutil.copytree(LAMP3, data)
    out = tmp_path / "out"
    args = lamp_args(data / "dev_questions.json", data / "dev_outputs.json", out)
    assert main(args) == 0
    assert json.loads((out / "metrics.json").read_text())["mae"] == pytest.approx((3 + 1 + 1) / 3)
    outputs = json.loads((data / "dev_outputs.json").read_text())
    outputs["golds"][0]["output"] = "4"
    (data / "dev_outputs.json").write_text(json.dumps(outputs))
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "the data changed" in err and f"outputs ({(data / 'dev_outputs.json').resolve()})" in err
    assert "questions" not in err.split("the data changed")[1]  # only what changed is named
    assert main([*args, "--overwrite"]) == 0
    assert json.loads((out / "metrics.json").read_text())["mae"] == pytest.approx((0 + 1 + 1) / 3)


def test_beir_refuses_a_rerun_on_a_changed_corpus_naming_the_file(tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(BEIR, data)
    out = tmp_path / "out"
    args = ["eval", "beir", "--dataset-dir", str(data), "--retriever", "test-exp-overlap", "--k", "3", "--output-dir", str(out)]
    assert main(args) == 0
    corpus = data / "corpus.jsonl"
    corpus.write_text(corpus.read_text().replace("mouse", "rat"))
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"changed since then: corpus ({corpus.resolve()})" in err and "--overwrite" in err
    assert main([*args, "--overwrite"]) == 0


def test_eval_lamp_without_outputs_does_not_claim_metrics(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(lamp_args(LAMP3 / "dev_questions.json", None, out)) == 0
    printed = capsys.readouterr().out
    assert not (out / "metrics.json").exists() and "metrics.json" not in printed
    assert "no gold outputs" in printed and len(lines(out / "predictions.jsonl")) == 3


# ---- the output folder: lock and checks ----------------------------------------------------------------
BEIR_ARGS = ["eval", "beir", "--dataset-dir", str(BEIR), "--retriever", "test-exp-overlap", "--k", "3"]


def test_a_run_into_a_folder_in_use_is_refused_and_a_dead_runs_lock_is_taken_over(tmp_path, capsys, caplog):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from personarag.experiment.artifacts import FolderLock; "
         "FolderLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(60)", str(out)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main([*BEIR_ARGS, "--output-dir", str(out)]) == 2
        assert f"is in use by a run of process {holder.pid}" in capsys.readouterr().err
        assert not (out / "run.trec").exists()
    finally:
        holder.kill()
        holder.wait()
    assert (out / LOCK_FILE).read_text().strip() == str(holder.pid)  # the dead run left its pid behind
    with caplog.at_level(logging.WARNING, logger="personarag.experiment.artifacts"):
        assert main([*BEIR_ARGS, "--output-dir", str(out)]) == 0
    assert f"taking over the lock of process {holder.pid}" in caplog.text
    assert (out / "run.trec").exists()


def test_the_lock_is_reentrant_within_a_process_and_released(tmp_path):
    with FolderLock(tmp_path), FolderLock(tmp_path):
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
    assert (tmp_path / LOCK_FILE).read_text() == ""


def test_an_output_folder_that_is_a_file_fails_before_any_loading(tmp_path, capsys):
    target = tmp_path / "results"
    target.write_text("not a folder")
    args = ["eval", "beir", "--dataset-dir", str(tmp_path / "no-such-dataset"), "--retriever", "test-exp-exploding"]
    assert main([*args, "--output-dir", str(target)]) == 2
    assert f"output folder {target}: {target} is a file" in capsys.readouterr().err
    assert main([*args, "--output-dir", str(target / "sub")]) == 2
    assert "is a file" in capsys.readouterr().err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write into read-only folders")
def test_a_read_only_output_folder_fails_before_any_loading(tmp_path, capsys):
    target = tmp_path / "ro"
    target.mkdir()
    target.chmod(0o500)
    try:
        args = ["eval", "beir", "--dataset-dir", str(tmp_path / "no-such-dataset"), "--retriever", "test-exp-exploding"]
        assert main([*args, "--output-dir", str(target)]) == 2
        assert "is not writable" in capsys.readouterr().err
    finally:
        target.chmod(0o700)


def test_write_json_replaces_atomically_and_leaves_no_temporary_files(tmp_path):
    path = write_json(tmp_path / "metrics.json", {"a": 1})
    write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2} and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    plain = tmp_path / "plain"
    plain.write_text("x")
    assert path.stat().st_mode == plain.stat().st_mode  # the umask's permissions, not a temp file's 0600


# ---- early validation (defect 10, command-line parts) -------------------------------------------------------
def test_a_missing_model_path_and_a_bad_depth_fail_before_retrieval(tmp_path, capsys):
    out = str(tmp_path / "out")
    base = ["eval", "beir", "--dataset-dir", str(BEIR), "--retriever", "test-exp-exploding", "--output-dir", out]
    assert main([*base, "--reranker", "pointwise:transformers:/no/such/model"]) == 2
    err = capsys.readouterr().err
    assert "model path /no/such/model does not exist" in err and "stage 1 (pointwise)" in err
    assert main([*base, "--rerank-depth", "0"]) == 2
    assert "rerank_depth must be a positive integer, got 0" in capsys.readouterr().err
    config = tmp_path / "run.yaml"
    config.write_text(f"dataset_dir: {BEIR}\nretriever: test-exp-exploding\nrerank_depth: -2\noutput_dir: {out}\n")
    assert main(["eval", "beir", "--config", str(config)]) == 2
    assert "rerank_depth must be a positive integer, got -2" in capsys.readouterr().err
    lamp = ["eval", "lamp", "--task", "LaMP-3", "--questions", str(LAMP3 / "dev_questions.json"), "--retriever", "none",
            "--generator", "lamp:transformers:/no/such/llm", "--output-dir", out]
    assert main(lamp) == 2
    assert "model path /no/such/llm does not exist" in capsys.readouterr().err


def test_unknown_keys_under_pipeline_are_an_error_listing_the_valid_ones(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(f"dataset_dir: {BEIR}\npipeline:\n  stages: [test-exp-overlap]\n  rerankdepth: 5\n")
    assert main(["eval", "beir", "--config", str(config), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "unknown keys under 'pipeline': ['rerankdepth']" in err and "'rerank_depth'" in err


def test_a_full_disk_fails_before_any_loading(tmp_path, monkeypatch, capsys):
    import shutil as shutil_module
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil_module, "disk_usage", lambda path: usage(10**9, 10**9 - 4096, 4096))
    args = ["eval", "beir", "--dataset-dir", str(tmp_path / "no-such-dataset"), "--retriever", "test-exp-exploding"]
    assert main([*args, "--output-dir", str(tmp_path / "out")]) == 2
    assert "the disk is full (4096 bytes free)" in capsys.readouterr().err


def test_no_library_module_imports_the_commands():
    import ast

    package = Path(__file__).parents[1] / "personarag"
    offenders = []
    for path in package.rglob("*.py"):
        if path.parent.name == "commands" or path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in getattr(node, "names", [])] if isinstance(node, ast.Import) else []
            if any(n == "personarag.commands" or n.startswith("personarag.commands.") for n in names):
                offenders.append(f"{path.relative_to(package.parent)}:{node.lineno}")
    assert offenders == []


def test_reasoning_jsonl_keeps_the_raw_listwise_answers(tmp_path):
    """What the model said is readable from the run folder, without reasoning and without the cache."""
    from personarag.rerankers.listwise import ListwiseReranker

    data = RankingDataset.from_beir(load_beir(BEIR))
    answer = "[2] > [1] > [3]"
    reranker = ListwiseReranker(ScriptedLLM(default=answer), window=3, stride=2)
    Experiment([Pipeline(["test-exp-overlap", reranker], k=3)], data, ["MRR@10"], output_dir=tmp_path, progress=False).run()
    rows = lines(tmp_path / "reasoning.jsonl")
    assert {r["query_id"] for r in rows} == {q.id for q in data.queries}
    assert all(r["stage"] == "listwise" and r["answer"] == answer and r["doc_id"] is None for r in rows)
