"""Slow: SmolLM2-135M-Instruct over BM25 history retrieval on real LaMP-3 dev examples, through `eval lamp`."""

from __future__ import annotations

import json

import pytest

from conftest import shared_data
from personarag.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    from tests.llm_models import smollm2_gguf

    return smollm2_gguf()


def test_smollm2_rates_real_reviews_with_history_bm25(smollm2, tmp_path, capsys):
    folder = shared_data("lamp", "LaMP_3_amazon_mi")
    out = tmp_path / "out"
    generator = {"spec": "lamp", "params": {
        "llm": {"spec": "transformers", "params": {"model": str(smollm2), "threads": 1, "cache_dir": None}},
        "answer_mode": "choose", "max_prompt_tokens": 256,
    }}
    config = tmp_path / "run.json"
    config.write_text(json.dumps({
        "task": "LaMP-3", "questions": str(folder / "dev_questions.json"), "outputs": str(folder / "dev_outputs.json"),
        "retriever": "history:bm25", "generator": generator, "k": 3, "max_examples": 6, "batch_size": 3,
    }))
    assert main(["eval", "lamp", "--config", str(config), "--output-dir", str(out)]) == 0
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 6 and all(p["prediction"] in {"1", "2", "3", "4", "5"} for p in predictions)
    retrieved = [json.loads(line) for line in (out / "retrieved.jsonl").read_text().splitlines()]
    assert [len(r["context"]) for r in retrieved] == [3, 3, 3, 3, 3, 0]
    assert "no profile items used" in retrieved[5]["problems"][0]  # its review alone fills the 256-token budget
    metrics = json.loads((out / "metrics.json").read_text())
    # Golden numbers: this 135M model puts "1" first for every review (golds 5, 5, 5, 5, 5, 4).
    assert [p["prediction"] for p in predictions] == ["1"] * 6
    assert metrics == pytest.approx({"mae": 23 / 6, "rmse": (89 / 6) ** 0.5, "unparsable": 0.0, "n": 6.0})
    stats = json.loads((out / "stats.json").read_text())
    assert stats["generated"] == 6 and stats["usage"]["calls"] == 6
    # The same command again continues the finished run: nothing is generated twice.
    assert main(["eval", "lamp", "--config", str(config), "--output-dir", str(out)]) == 0
    assert json.loads((out / "stats.json").read_text())["generated"] == 0
    assert json.loads((out / "metrics.json").read_text()) == metrics
