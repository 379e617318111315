"""`personarag eval beir` end to end on the mini BEIR fixture, in-process and as the installed script."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from personarag import Ranking, ScoredDoc, StageTrace, registry
from personarag.cli import main
from personarag.evaluation import Qrels, Run, evaluate
from personarag.rerankers.base import Reranker
from personarag.retrievers.base import Retriever

FIXTURE = Path(__file__).parent / "fixtures" / "beir_mini"


class TextOverlap(Retriever):
    """Counts whitespace words shared by query and body text (titles ignored, punctuation kept), ties in corpus order."""

    spec_name = "test-text-overlap"

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


class Reverse(Reranker):
    spec_name = "test-reverse"

    def _rerank(self, rankings):
        return [r.with_stage(list(reversed(r.docs)), StageTrace("reverse")) for r in rankings]


@pytest.fixture(autouse=True)
def test_stages(monkeypatch):
    monkeypatch.setitem(
        registry.REGISTRY, "test-text-overlap", registry.Entry("retriever", f"{__name__}:TextOverlap", None, "")
    )
    monkeypatch.setitem(registry.REGISTRY, "test-reverse", registry.Entry("reranker", f"{__name__}:Reverse", None, ""))


# By hand: q3 "what do mice eat" -> d4 first; q1 "cat chasing a mouse" -> d3 (rel 2) then d1 (rel 1, a 0-overlap
# tie kept in corpus order); q2 "electricity from sunlight" -> d6 ("electricity", "from") above d5 ("sunlight"
# only: "electricity." keeps its period), so d5 (the relevant one) comes second.
EXPECTED = {"nDCG@10": (1 + 1 + 1 / math.log2(3)) / 3, "MRR@10": (1 + 1 + 1 / 2) / 3, "Recall@2": 1.0}
FLAGS = ["--retriever", "test-text-overlap", "--k", "3", "--measures", "nDCG@10", "MRR@10", "Recall@2"]


def eval_beir(*args: str) -> int:
    return main(["eval", "beir", *args])


def test_eval_beir_writes_run_metrics_and_config(tmp_path, capsys):
    out = tmp_path / "out"
    assert eval_beir("--dataset-dir", str(FIXTURE), *FLAGS, "--output-dir", str(out)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["nDCG@10", "MRR@10", "Recall@2"]
    for key, value in EXPECTED.items():
        assert metrics[key] == pytest.approx(value)
    run = Run.read_trec(out / "run.trec")
    assert run.query_ids == ["q3", "q1", "q2"]
    assert [d for d, _ in run["q2"]] == ["d6", "d5", "d1"]
    # The files agree with each other: re-scoring run.trec gives metrics.json.
    rescored = evaluate(run, Qrels.read(FIXTURE / "qrels" / "test.tsv"), list(metrics))
    assert rescored.aggregate == pytest.approx(metrics)
    per_query = json.loads((out / "per_query.json").read_text())
    assert per_query["q2"]["MRR@10"] == 0.5
    config = json.loads((out / "config.json").read_text())
    assert config["run_name"].startswith("beir-beir_mini-")
    assert run.name == config["run_name"]
    assert config["pipeline"]["stages"] == [{"spec": "test-text-overlap", "params": {}}]
    assert config["pipeline"]["k"] == 3
    assert config["dataset_dir"] == str(FIXTURE.resolve())
    assert {"python", "personarag", "ir_measures"} <= set(config["versions"])
    stats = json.loads((out / "stats.json").read_text())
    assert stats["queries"] == 3 and stats["documents"] == 6
    printed = capsys.readouterr().out
    assert "nDCG@10" in printed and f"{EXPECTED['nDCG@10']:.4f}" in printed


def test_config_file_run_equals_flag_run_and_flags_override(tmp_path):
    by_flags, by_file, by_saved = tmp_path / "flags", tmp_path / "file", tmp_path / "saved"
    assert eval_beir("--dataset-dir", str(FIXTURE), *FLAGS, "--output-dir", str(by_flags)) == 0
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "dataset_dir": str(FIXTURE),
        "retriever": {"spec": "test-text-overlap"},
        "k": 3,
        "measures": ["nDCG@10", "MRR@10", "Recall@2"],
        "output_dir": str(by_file),
    }))
    assert eval_beir("--config", str(config)) == 0
    for name in ("run.trec", "metrics.json", "config.json", "per_query.json"):
        assert (by_file / name).read_text() == (by_flags / name).read_text(), name
    # A run's own config.json reproduces it.
    assert eval_beir("--config", str(by_flags / "config.json"), "--output-dir", str(by_saved)) == 0
    assert (by_saved / "config.json").read_text() == (by_flags / "config.json").read_text()
    # Command-line flags win over the file.
    override = tmp_path / "override"
    assert eval_beir("--config", str(config), "--k", "1", "--output-dir", str(override)) == 0
    assert json.loads((override / "config.json").read_text())["pipeline"]["k"] == 1
    assert len((override / "run.trec").read_text().splitlines()) == 3


def test_rerankers_and_rerank_depth_are_applied_and_recorded(tmp_path):
    out = tmp_path / "out"
    args = ["--dataset-dir", str(FIXTURE), *FLAGS, "--reranker", "test-reverse", "--rerank-depth", "2"]
    assert eval_beir(*args, "--output-dir", str(out)) == 0
    run = Run.read_trec(out / "run.trec")
    assert [d for d, _ in run["q2"]] == ["d5", "d6", "d1"]  # the top 2 of d6, d5, d1 reversed, the tail kept
    config = json.loads((out / "config.json").read_text())
    assert config["pipeline"]["stages"][1] == {"spec": "test-reverse", "params": {}}
    assert config["pipeline"]["rerank_depth"] == 2
    metrics = json.loads((out / "metrics.json").read_text())
    # q3: d4 drops to 2nd; q1: d1 (rel 1) now first; q2: d5 (relevant) moves up to 1st.
    assert metrics["MRR@10"] == pytest.approx((1 / 2 + 1 + 1) / 3)
    assert json.loads((out / "per_query.json").read_text())["q3"]["MRR@10"] == 0.5


def test_refuses_to_overwrite_a_different_run(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--dataset-dir", str(FIXTURE), *FLAGS, "--output-dir", str(out)]
    assert eval_beir(*args) == 0
    first = (out / "config.json").read_text()
    assert eval_beir(*args) == 0  # the same run again is fine
    assert eval_beir(*args, "--k", "2") == 2
    assert "holds the results of a different run" in capsys.readouterr().err
    assert (out / "config.json").read_text() == first
    assert eval_beir(*args, "--k", "2", "--overwrite") == 0
    assert json.loads((out / "config.json").read_text())["pipeline"]["k"] == 2


def test_errors_are_reported_not_raised(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert eval_beir("--dataset-dir", str(FIXTURE), "--retriever", "test-text-overlap", "--measures", "nDGC@10", "--output-dir", out) == 2
    assert "unknown measure 'nDGC@10'" in capsys.readouterr().err
    assert eval_beir("--dataset-dir", str(FIXTURE), "--retriever", "test-text-overlap", "--split", "dev", "--output-dir", out) == 2
    assert "splits available: test, train" in capsys.readouterr().err
    assert eval_beir("--retriever", "test-text-overlap", "--output-dir", out) == 2
    assert "--dataset-dir DIR or --dataset NAME" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("retriever: test-text-overlap\nretreiver_k: 3\n")
    assert eval_beir("--config", str(bad)) == 2
    assert "unknown keys ['retreiver_k']" in capsys.readouterr().err
    assert eval_beir("--dataset-dir", str(FIXTURE), "--retriever", "bm42", "--output-dir", out) == 2
    assert "unknown spec 'bm42'" in capsys.readouterr().err


def test_dataset_by_name_uses_the_cache(tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(FIXTURE, cache / "minifact")
    out = tmp_path / "out"
    assert eval_beir("--dataset", "minifact", "--cache-dir", str(cache), *FLAGS, "--max-queries", "2", "--output-dir", str(out)) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["dataset"] == "minifact" and config["dataset_dir"] is None
    assert config["run_name"].startswith("beir-minifact-")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["nDCG@10"] == pytest.approx(1.0)  # q3 and q1 only
    assert Run.read_trec(out / "run.trec").query_ids == ["q3", "q1"]


def test_eval_beir_with_bm25(tmp_path):
    if "bm25" not in registry.REGISTRY:
        pytest.skip("the bm25 retriever is not registered yet")
    out = tmp_path / "out"
    assert eval_beir("--dataset-dir", str(FIXTURE), "--retriever", "bm25", "--k", "6", "--output-dir", str(out)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["nDCG@10", "Recall@100", "MAP", "MRR@10"]
    assert metrics["Recall@100"] == 1.0  # k covers the whole corpus
    assert metrics["MRR@10"] == 1.0  # each query's words point at its relevant doc first


def test_installed_script_runs():
    script = Path(sys.executable).parent / "personarag"
    if not script.exists():
        pytest.skip(f"{script} is not installed (pip install -e . creates it)")
    result = subprocess.run([str(script), "eval", "beir", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--dataset-dir" in result.stdout and "--rerank-depth" in result.stdout
    bare = subprocess.run([str(script)], capture_output=True, text=True, timeout=120)
    assert bare.returncode == 2 and "eval" in bare.stdout


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "eval").glob("scifact_*.yaml")), ids=lambda p: p.name)
def test_shipped_beir_configs_are_valid(path):
    from personarag.commands import common, eval_beir

    config = common.read_config_file(str(path), eval_beir.CONFIG_KEYS)
    assert config["dataset"] == "scifact" and config["split"] == "test"
    assert config["output_dir"] == f"eval/results/{path.stem}"
    retriever = config["retriever"]  # a spec string, or a {spec, params} mapping
    name, _ = registry.split_spec(retriever["spec"] if isinstance(retriever, dict) else retriever)
    if name in registry.REGISTRY:
        assert registry.REGISTRY[name].role == "retriever"


@pytest.mark.slow
def test_scifact_bm25_from_the_shipped_config_matches_published(scifact_dir, tmp_path):
    if "bm25" not in registry.REGISTRY:
        pytest.skip("the bm25 retriever is not registered yet")
    config = Path(__file__).parents[1] / "eval" / "scifact_bm25.yaml"
    out = tmp_path / "scifact_bm25"
    assert main(["eval", "beir", "--config", str(config), "--dataset-dir", str(scifact_dir), "--output-dir", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["nDCG@10"] == pytest.approx(0.676, abs=0.005)  # published bm25s, k1=0.9 b=0.4
    assert json.loads((out / "stats.json").read_text())["judged_queries"] == 300


def test_train_llm_sft_is_one_command_whose_kind_is_a_flag(capsys):
    # listwise needs candidates from a data set: the kind given as a flag reaches the config's checks
    assert main(["train", "llm-sft", "--kind", "listwise", "--base", "b", "--output-dir", "o"]) != 0
    assert "dataset_dir" in capsys.readouterr().err
    assert main(["train", "llm-sft", "--kind", "groupwise", "--base", "b", "--output-dir", "o"]) != 0
    assert "kind must be one of ('pointwise', 'listwise')" in capsys.readouterr().err
    assert main(["train", "listwise", "--base", "b", "--output-dir", "o"]) != 0  # the shortcut sets the kind
    assert "dataset_dir" in capsys.readouterr().err
