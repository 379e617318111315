"""engine="ray": the queries of a run sharded over a local Ray cluster write the same files as a local
run, byte for byte, and resume the same way. Skipped when the `ray` extra is absent."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed")

from personarag import Pipeline  # noqa: E402
from personarag.cli import main  # noqa: E402
from personarag.errors import InputError  # noqa: E402
from personarag.evaluation.beir import load_beir  # noqa: E402
from personarag.evaluation.lamp import load_lamp  # noqa: E402
from personarag.experiment import Experiment, LampData, RankingDataset  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
BEIR = FIXTURES / "beir_mini"
LAMP3 = FIXTURES / "lamp" / "LaMP_3"
ROOT = Path(__file__).resolve().parent.parent
OPTIONS = {"actors": 2, "num_cpus": 0.5}
LAMP_PIPELINE = {"stages": ["history:bm25", {"spec": "lamp", "params": {
    "task": "LaMP-3", "llm": {"spec": "scripted", "params": {"default": "4 étoiles"}}}}], "k": 3, "context_k": 2}


@pytest.fixture(scope="module", autouse=True)
def cluster():
    # the workers import this checkout's personarag, with one torch thread each
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": env}, log_to_driver=False)
    yield
    ray.shutdown()


def beir_run(out: Path, engine: str, **kw) -> Experiment:
    data = RankingDataset.from_beir(load_beir(BEIR))
    return Experiment(Pipeline(["bm25"], k=5), data, ["nDCG@10", "MRR@10"], output_dir=out, batch_size=1,
                      progress=False, engine=engine, **({"ray_options": OPTIONS} if engine == "ray" else {}), **kw)


def lamp_data(max_examples: int | None = None) -> LampData:
    dataset = load_lamp("LaMP-3", LAMP3 / "dev_questions.json", LAMP3 / "dev_outputs.json")
    return LampData(dataset, max_examples=max_examples)


def lamp_run(out: Path, engine: str, max_examples: int | None = None) -> Experiment:
    return Experiment(Pipeline.from_config(LAMP_PIPELINE), lamp_data(max_examples), output_dir=out, batch_size=2,
                      progress=False, prefix="lamp-LaMP-3", engine=engine,
                      **({"ray_options": OPTIONS} if engine == "ray" else {}))


def same_files(a: Path, b: Path, names: list[str]) -> None:
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_beir_on_ray_writes_the_local_run_byte_for_byte(tmp_path):
    local = beir_run(tmp_path / "local", "local").run()
    remote = beir_run(tmp_path / "ray", "ray").run()
    assert next(iter(remote.systems.values())).ran == 3  # the judged queries of the test split
    same_files(tmp_path / "local", tmp_path / "ray", ["run.trec", "metrics.json", "per_query.json", "rankings.jsonl",
                                                      "config.json"])
    assert next(iter(local.systems.values())).metrics == next(iter(remote.systems.values())).metrics
    stats = json.loads((tmp_path / "ray" / "stats.json").read_text())
    assert stats["engine"] == {"name": "ray", "address": None, "actors": 2, "num_cpus": 0.5}
    assert len((tmp_path / "ray" / "run.trec").read_text().splitlines()) == 3 * 5


def test_lamp_on_ray_resumes_a_partial_run_and_writes_the_local_predictions(tmp_path):
    out = tmp_path / "ray"
    first = lamp_run(out, "ray", max_examples=1).run()  # a partial run: one of three examples
    assert next(iter(first.systems.values())).ran == 1
    again = lamp_run(out, "ray").run()
    assert next(iter(again.systems.values())).ran == 2  # only the unfinished two were sent
    lamp_run(tmp_path / "local", "local").run()
    same_files(tmp_path / "local", out, ["predictions.jsonl", "metrics.json", "per_query.json", "config.json"])
    retrieved = [json.loads(line) for line in (out / "retrieved.jsonl").read_text().splitlines()]
    assert [r["id"] for r in retrieved] == ["3-1", "3-2", "3-3"]
    assert all(len(r["context"]) == 2 for r in retrieved)  # history:bm25 ran in the actors
    # a local rerun of the Ray folder finds nothing left to do
    assert next(iter(lamp_run(out, "local").run().systems.values())).ran == 0


def test_eval_beir_with_the_ray_flag(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["eval", "beir", "--dataset-dir", str(BEIR), "--retriever", "bm25", "--k", "5", "--output-dir"]
    assert main([*args, str(out), "--ray", "--ray-actors", "2"]) == 0
    assert main([*args, str(tmp_path / "local")]) == 0
    same_files(tmp_path / "local", out, ["run.trec", "metrics.json", "per_query.json"])
    assert json.loads((out / "stats.json").read_text())["engine"]["actors"] == 2


def test_bad_engine_and_options_are_refused_before_any_work(tmp_path):
    with pytest.raises(InputError, match="engine must be 'local' or 'ray'"):
        beir_run(tmp_path, "spark")
    data = RankingDataset.from_beir(load_beir(BEIR))
    with pytest.raises(InputError, match=r"unknown keys \['gpus'\]"):
        Experiment(Pipeline(["bm25"]), data, output_dir=tmp_path, engine="ray", ray_options={"gpus": 1})
    with pytest.raises(InputError, match="'actors'.*positive integer, got 0"):
        Experiment(Pipeline(["bm25"]), data, output_dir=tmp_path, engine="ray", ray_options={"actors": 0})
