"""Cross-encoder fine-tuning on a tiny random BERT (MiniLM's tokenizer): runs, saves, reloads, resumes, refuses."""

from __future__ import annotations

import json

import pytest
from training_models import tiny_bert, write_beir

from personarag import registry
from personarag.cli import main as cli_main
from personarag.errors import InputError
from personarag.training.common import RUN_FILE, last_checkpoint, read_run_file, write_run_file
from personarag.training.cross_encoder import CrossEncoderTrainConfig, train_cross_encoder
from personarag.types import Document, Query, Ranking, ScoredDoc

pytest.importorskip("sentence_transformers")


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    return tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="module")
def beir(tmp_path_factory):
    return write_beir(tmp_path_factory.mktemp("beir"))


def config(out, bert, beir, **kw):
    values = dict(output_dir=str(out), base=str(bert), dataset_dir=str(beir), negatives=2, mining_depth=8,
                  batch_size=4, max_length=48, learning_rate=1e-3, max_steps=3, eval_steps=2, dev_queries=2,
                  dev_depth=6, seed=0)
    values.update(kw)
    return CrossEncoderTrainConfig(**values)


def ranking():
    docs = [Document("a", "Mice eat cheese, grain and seeds.", "Mice"), Document("b", "Wind turbines make power."),
            Document("c", "Owls hunt mice at night.")]
    return Ranking(Query("q", "what do mice eat"), tuple(ScoredDoc(d, 0.0) for d in docs))


def scores(spec_model):
    reranker = registry.build(f"cross-encoder:{spec_model}", role="reranker")
    [out] = reranker.rerank([ranking()])
    return {sd.id: sd.score for sd in out.docs}


def test_bce_training_saves_a_model_that_loads_as_a_cross_encoder_spec(tmp_path, bert, beir):
    out = tmp_path / "ce"
    result = train_cross_encoder(config(out, bert, beir))
    info = read_run_file(out)
    assert info["status"] == "done" and info["global_step"] == 3
    assert info["config"]["loss"] == "bce" and info["versions"]["sentence-transformers"]
    assert info["data"]["queries"] == 4  # 6 judged queries with documents, 2 of them held out as dev
    # two dev queries held out: dev evaluated at the start, at step 2 and at the end (step 3)
    assert [row["step"] for row in result.dev_history] == [0, 2, 3]
    assert all(0.0 <= row["ndcg@10"] <= 1.0 for row in result.dev_history)
    assert info["best_checkpoint"] and (out / "checkpoints").is_dir()
    sweep = info["dev"]["first_stage_weight"]
    assert len(sweep["ndcg@10"]) == 11 and sweep["ndcg@10"][str(sweep["best"])] == max(sweep["ndcg@10"].values())
    assert sweep["ndcg@10"]["1.0"] == pytest.approx(info["dev"]["first_stage"])  # weight 1: the first stage's order
    card = (out / "README.md").read_text()
    assert f"best first_stage_weight on dev: {sweep['best']}" in card
    assert "## Data" in card and "loss: `bce`" in card and "transformers:" in card and "nDCG@10" in card
    tuned, base = scores(out), scores(bert)
    assert set(tuned) == {"a", "b", "c"}
    assert any(abs(tuned[d] - base[d]) > 1e-4 for d in tuned)  # the weights really changed


def test_mean_pooling_head_trains_and_reloads_as_a_cross_encoder_spec(tmp_path, bert, beir):
    out = tmp_path / "mean"
    train_cross_encoder(config(out, bert, beir, head="mean", dev_queries=0))
    modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((out / "modules.json").read_text())]
    assert modules == ["Transformer", "Pooling", "Dense"]
    assert "head: `mean`" in (out / "README.md").read_text()
    from sentence_transformers.cross_encoder import CrossEncoder

    initial = CrossEncoder(str(out / "checkpoints" / "checkpoint-2"))
    tuned = scores(out)
    assert len({round(v, 6) for v in tuned.values()}) == 3
    pairs = [(ranking().query.text, sd.doc.full_text) for sd in ranking().docs]
    assert any(abs(a - b) > 1e-5 for a, b in zip(initial.predict(pairs), [tuned[sd.id] for sd in ranking().docs]))


def test_an_unknown_head_is_refused(tmp_path, bert, beir):
    with pytest.raises(InputError, match="head must be one of"):
        config(tmp_path / "x", bert, beir, head="max")


@pytest.mark.parametrize("loss", ["lambda", "listnet", "mnrl"])
def test_ranking_losses_train(tmp_path, bert, beir, loss):
    out = tmp_path / loss
    result = train_cross_encoder(config(out, bert, beir, loss=loss, batch_size=2, dev_queries=0, max_steps=2,
                                        negatives=1))
    assert read_run_file(out)["global_step"] == 2 and result.dev_history == []
    assert scores(out).keys() == {"a", "b", "c"}


def test_an_existing_run_is_refused_then_overwritten(tmp_path, bert, beir):
    out = tmp_path / "ce"
    train_cross_encoder(config(out, bert, beir, max_steps=1, dev_queries=0))
    with pytest.raises(InputError, match="already holds a training run"):
        train_cross_encoder(config(out, bert, beir, max_steps=1, dev_queries=0, seed=1))
    with pytest.raises(InputError, match="different config"):
        train_cross_encoder(config(out, bert, beir, max_steps=1, dev_queries=0, seed=1), resume=True)
    train_cross_encoder(config(out, bert, beir, max_steps=1, dev_queries=0, seed=1), overwrite=True)
    assert read_run_file(out)["config"]["seed"] == 1
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not a personarag training run"):
        train_cross_encoder(config(foreign, bert, beir), overwrite=True)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_resume_continues_from_the_last_checkpoint(tmp_path, bert, beir):
    out = tmp_path / "ce"
    cfg = config(out, bert, beir, max_steps=4, eval_steps=2, dev_queries=0, save_total_limit=3)
    train_cross_encoder(cfg)
    # simulate a run killed after its step-2 checkpoint
    import shutil

    shutil.rmtree(out / "checkpoints" / "checkpoint-4")
    (out / "model.safetensors").unlink()
    write_run_file(out, {"status": "running"})
    assert last_checkpoint(out).endswith("checkpoint-2")
    train_cross_encoder(cfg, resume=True)
    info = read_run_file(out)
    assert info["status"] == "done" and info["global_step"] == 4
    assert info["resumed_from"].endswith("checkpoint-2")
    assert (out / "model.safetensors").is_file()


def test_bases_that_cannot_have_a_relevance_head_are_refused(tmp_path, beir):
    from transformers import BertConfig, ViTConfig

    vit = tmp_path / "vit"
    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).save_pretrained(vit)
    with pytest.raises(InputError, match="no sequence-classification head"):
        train_cross_encoder(config(tmp_path / "o1", vit, beir))
    nli = tmp_path / "nli"
    BertConfig(num_labels=3, architectures=["BertForSequenceClassification"]).save_pretrained(nli)
    with pytest.raises(InputError, match="3-label classifier"):
        train_cross_encoder(config(tmp_path / "o2", nli, beir))


def test_cli_trains_from_a_yaml_config_with_flag_overrides(tmp_path, bert, beir, capsys):
    yaml_file = tmp_path / "train.yaml"
    yaml_file.write_text(f"base: {bert}\ndataset_dir: {beir}\nnegatives: 1\nmax_steps: 5\nbatch_size: 4\n"
                         f"max_length: 32\noutput_dir: {tmp_path / 'cli'}\n")
    assert cli_main(["train", "cross-encoder", "--config", str(yaml_file), "--max-steps", "1"]) == 0
    info = json.loads((tmp_path / "cli" / RUN_FILE).read_text())
    assert info["global_step"] == 1 and info["config"]["negatives"] == 1
    assert "cross-encoder:" in capsys.readouterr().out
    yaml_file.write_text("max_stepz: 3\n")
    assert cli_main(["train", "cross-encoder", "--config", str(yaml_file)]) == 2
    assert "unknown training options ['max_stepz']" in capsys.readouterr().err
