"""`personarag train user-encoder` and `personarag train llm-feedback` end to end on the LaMP_3
fixture (two users), with a tiny random sentence encoder and a tiny random Llama: the artifacts
load as collaborative specs, resume reuses what was done, a second run is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import FIXTURES
from llm_models import cache_root, smollm2_tokenizer_dir, tiny_llama
from personarag import registry
from personarag.cli import main
from personarag.evaluation.lamp import load_lamp

LAMP3 = FIXTURES / "lamp" / "LaMP_3"
DATA = ["--task", "LaMP-3", "--questions", str(LAMP3 / "dev_questions.json")]


@pytest.fixture(scope="module")
def llama(request, tmp_path_factory) -> Path:
    tokenizer = smollm2_tokenizer_dir(cache_root(request, tmp_path_factory))
    return tiny_llama(tmp_path_factory.mktemp("feedback-llama"), tokenizer)


def data():
    return load_lamp("LaMP-3", LAMP3 / "dev_questions.json", LAMP3 / "dev_outputs.json")


def test_train_user_encoder_produces_an_encoder_the_collaborative_spec_loads(tmp_path, tiny_bi_encoder_path, capsys):
    out = tmp_path / "enc"
    argv = ["train", "user-encoder", *DATA, "--output-dir", str(out), "--item-model", str(tiny_bi_encoder_path),
            "--epochs", "3", "--batch-size", "2", "--heads", "2", "--threads", "1"]
    assert main(argv) == 0
    assert "on 2 users" in capsys.readouterr().out
    run = json.loads((out / "personarag_training.json").read_text())
    assert run["status"] == "finished" and run["users"] == 2 and len(run["losses"]) == 3
    assert run["config"]["questions"] == str(LAMP3 / "dev_questions.json")
    assert {"model.safetensors", "config.json", "README.md", "item_embeddings.npz"} <= {p.name for p in out.iterdir()}
    assert f"user_encoder={out}" in (out / "README.md").read_text()

    retriever = registry.build(f"collaborative:{tiny_bi_encoder_path}", user_encoder=str(out), m=1).fit_users(data().users)
    ranking = retriever.retrieve([data().examples[0].query], k=10)[0]
    assert {d.doc.id for d in ranking.docs} == {"301", "302", "303", "304", "305"}  # cara's items and dan's

    assert main(argv + ["--resume"]) == 0  # finished: reused, not trained again
    assert "finished already" in capsys.readouterr().out
    assert main(argv) == 2  # a second run into the folder is refused
    assert "--resume" in capsys.readouterr().err


def test_train_llm_feedback_learns_a_scorer_the_collaborative_spec_loads(tmp_path, tiny_bi_encoder_path, llama, capsys, monkeypatch):
    out = tmp_path / "scorer"
    argv = ["--llm-cache", str(tmp_path / "cache"), "train", "llm-feedback", *DATA, "--outputs", str(LAMP3 / "dev_outputs.json"),
            "--output-dir", str(out), "--llm", f"transformers:{llama}", "--model", str(tiny_bi_encoder_path),
            "--max-queries", "2", "--candidates", "4", "--epochs", "50", "--threads", "1"]
    assert main(argv) == 0
    assert "the first 2 examples" in capsys.readouterr().out
    run = json.loads((out / "personarag_training.json").read_text())
    assert run["status"] == "finished" and run["trained_on"] == ["3-1", "3-2"] and run["queries"] == 2
    feedback = [json.loads(line) for line in (out / "feedback.jsonl").read_text().splitlines()]
    assert [f["id"] for f in feedback] == ["3-1", "3-2"] and all(len(f["docs"]) == 4 for f in feedback)
    assert all(np.isfinite(f["llm_scores"]).all() and len(set(f["llm_scores"])) > 1 for f in feedback)
    assert not np.allclose(run["weights"], run["initial_weights"])  # the KL fit moved the weights
    assert "other 1 examples were not used" in (out / "README.md").read_text()

    retriever = registry.build(f"collaborative:{tiny_bi_encoder_path}", scorer=str(out))
    assert np.allclose(retriever.weights, run["weights"])

    # resuming asks the LLM nothing: every training query's feedback is in feedback.jsonl
    import personarag.llm

    def no_llm(*args, **kwargs):
        raise AssertionError("the LLM was loaded on a resumed run with nothing left to ask")

    monkeypatch.setattr(personarag.llm, "load_llm", no_llm)
    assert main(argv + ["--resume"]) == 0
    again = json.loads((out / "personarag_training.json").read_text())
    assert np.allclose(again["weights"], run["weights"])


def test_llm_feedback_over_a_user_store_asks_about_the_same_candidates_as_in_memory(tmp_path, tiny_bi_encoder_path, llama):
    from personarag.personal.store import UserStore

    def feedback_of(out: Path, *extra: str) -> list[dict]:
        argv = ["--llm-cache", str(tmp_path / "cache"), "train", "llm-feedback", *DATA, "--outputs", str(LAMP3 / "dev_outputs.json"),
                "--output-dir", str(out), "--llm", f"transformers:{llama}", "--model", str(tiny_bi_encoder_path),
                "--max-queries", "2", "--candidates", "4", "--epochs", "5", "--threads", "1", *extra]
        assert main(argv) == 0
        return [json.loads(line) for line in (out / "feedback.jsonl").read_text().splitlines()]

    in_memory = feedback_of(tmp_path / "memory")
    db = tmp_path / "users.db"
    stored = feedback_of(tmp_path / "stored", "--store", str(db))
    assert [f["docs"] for f in stored] == [f["docs"] for f in in_memory]
    assert np.allclose([f["features"] for f in stored], [f["features"] for f in in_memory], atol=1e-6)
    with UserStore(db) as store:  # the split's users were imported for the retriever
        assert sorted(store.user_ids()) == sorted(u.id for u in data().users)
