"""engine="ray": the queries of a run sharded over a local Ray cluster write the same files as a local
run, byte for byte, and resume the same way; a store's history items are encoded by Ray actors into its
embedding cache once. Skipped when the `ray` extra is absent."""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed")

from personarag import Pipeline  # noqa: E402
from personarag.cli import main  # noqa: E402
from personarag.errors import InputError  # noqa: E402
from personarag.evaluation.beir import load_beir  # noqa: E402
from personarag.evaluation.lamp import load_lamp  # noqa: E402
from personarag.experiment import Experiment, LampData, RankingDataset  # noqa: E402
from personarag.personal.ray_encode import encode_store_items, missing_items  # noqa: E402

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
    # (and this module, for the test encoder)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH")])),
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


def test_eval_lamp_with_the_ray_flag(tmp_path):
    config = tmp_path / "lamp.json"
    config.write_text(json.dumps({"generator": LAMP_PIPELINE["stages"][1]}), encoding="utf-8")
    args = ["eval", "lamp", "--config", str(config), "--task", "LaMP-3", "--questions", str(LAMP3 / "dev_questions.json"),
            "--outputs", str(LAMP3 / "dev_outputs.json"), "--retriever", "history:bm25", "--k", "2", "--output-dir"]
    assert main([*args, str(tmp_path / "ray"), "--ray", "--ray-cpus", "0.5"]) == 0
    assert main([*args, str(tmp_path / "local")]) == 0
    same_files(tmp_path / "local", tmp_path / "ray", ["predictions.jsonl", "metrics.json", "per_query.json", "config.json"])
    assert json.loads((tmp_path / "ray" / "stats.json").read_text())["engine"] == {"name": "ray", "address": None,
                                                                                  "num_cpus": 0.5}


def test_eval_bright_with_the_ray_flag_over_two_tasks(tmp_path):
    import shutil

    data = tmp_path / "bright"
    for task in ("biology", "earth_science"):
        shutil.copytree(FIXTURES / "bright_mini" / "biology", data / task)
    args = ["eval", "bright", "--dataset-dir", str(data), "--task", "biology", "--task", "earth_science",
            "--retriever", "bm25", "--k", "5", "--output-dir"]
    assert main([*args, str(tmp_path / "ray"), "--ray"]) == 0
    assert main([*args, str(tmp_path / "local")]) == 0
    same_files(tmp_path / "local", tmp_path / "ray", ["metrics.json", "biology/run.trec", "earth_science/run.trec",
                                                      "earth_science/per_query.json"])


def test_ray_sizes_without_ray_are_refused(tmp_path, capsys):
    args = ["eval", "beir", "--dataset-dir", str(BEIR), "--retriever", "bm25", "--output-dir", str(tmp_path / "out")]
    assert main([*args, "--ray-gpus", "1"]) == 2
    assert "--ray-gpus needs --ray [ADDRESS]" in capsys.readouterr().err
    assert not (tmp_path / "out" / "run.trec").exists()


def test_bad_engine_and_options_are_refused_before_any_work(tmp_path):
    with pytest.raises(InputError, match="engine must be 'local' or 'ray'"):
        beir_run(tmp_path, "spark")
    data = RankingDataset.from_beir(load_beir(BEIR))
    with pytest.raises(InputError, match=r"unknown keys \['gpus'\]"):
        Experiment(Pipeline(["bm25"]), data, output_dir=tmp_path, engine="ray", ray_options={"gpus": 1})
    with pytest.raises(InputError, match="'actors'.*positive integer, got 0"):
        Experiment(Pipeline(["bm25"]), data, output_dir=tmp_path, engine="ray", ray_options={"actors": 0})


# ---- a store's history items encoded by Ray actors ------------------------------------------------
@dataclass(frozen=True)
class Fingerprint:
    key: str


class MiniLM:
    """all-MiniLM-L6-v2 with a fixed fingerprint key (the item encoder interface)."""

    def __init__(self, path: str, key: str = "minilm-test") -> None:
        import torch

        from personarag.retrievers.encoders import load_sentence_encoder

        torch.set_num_threads(1)
        self.model, self.fingerprint = load_sentence_encoder(path, "cpu"), Fingerprint(key)

    def encode(self, texts):
        return self.model.encode(list(texts), batch_size=16)


def test_store_items_are_encoded_on_ray_once_into_the_cache(tmp_path, minilm_path):
    pytest.importorskip("sqlalchemy")
    from personarag.personal.store import UserStore, content_hash

    dataset = load_lamp("LaMP-3", LAMP3 / "dev_questions.json", LAMP3 / "dev_outputs.json")
    with UserStore(tmp_path / "u.db") as store:
        store.add_users(dataset.users)
        texts = {content_hash(d): d.full_text for u in dataset.users for d in u.history}
        first_user = dataset.users[0]
        factory = functools.partial(MiniLM, str(minilm_path))
        only_first = encode_store_items(store, factory, fingerprint="minilm-test", user_ids=[first_user.id],
                                        batch_size=2, actors=1)
        assert only_first.encoded == len({content_hash(d) for d in first_user.history}) > 0
        report = encode_store_items(store, factory, fingerprint="minilm-test", batch_size=2, actors=1)
        assert (report.items, report.cached, report.encoded) == (len(texts), only_first.encoded,
                                                                  len(texts) - only_first.encoded)
        assert missing_items(store, "minilm-test") == (len(texts), {})
        cached = store.get_embeddings("minilm-test", list(texts))
        local = MiniLM(str(minilm_path)).encode(list(texts.values()))
        assert np.allclose(np.stack([cached[h] for h in texts]), local, atol=1e-5)
        assert missing_items(store, "another-model")[1] == texts  # other encoders' keys are untouched
        again = encode_store_items(store, factory, fingerprint="minilm-test")
        assert (again.cached, again.encoded) == (len(texts), 0)


def test_a_worker_with_another_encoder_fingerprint_is_refused(tmp_path, minilm_path):
    pytest.importorskip("sqlalchemy")
    from personarag.personal.store import UserStore

    dataset = load_lamp("LaMP-3", LAMP3 / "dev_questions.json", LAMP3 / "dev_outputs.json")
    with UserStore(tmp_path / "u.db") as store:
        store.add_users(dataset.users[:1])
        with pytest.raises(InputError, match="fingerprint 'other'.*'minilm-test'"):
            encode_store_items(store, functools.partial(MiniLM, str(minilm_path), "other"), fingerprint="minilm-test",
                               actors=1)
        assert missing_items(store, "minilm-test")[1]  # nothing was written
