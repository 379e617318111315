"""The CLI caches LLM requests by default: a repeated evaluation makes no LLM call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_models import cache_root, smollm2_tokenizer_dir, tiny_llama
from personarag.cli import main
from personarag.llm.cache import ENV_VAR

FIXTURE = Path(__file__).parent / "fixtures" / "beir_mini"


@pytest.fixture(scope="module")
def llama(request, tmp_path_factory) -> Path:
    tokenizer = smollm2_tokenizer_dir(cache_root(request, tmp_path_factory))
    return tiny_llama(tmp_path_factory.mktemp("cli-llama"), tokenizer)


def eval_with_pointwise(llama: Path, out: Path, *cache_flags: str) -> dict:
    argv = [*cache_flags, "eval", "beir", "--dataset-dir", str(FIXTURE), "--retriever", "bm25", "--k", "3",
            "--reranker", f"pointwise:transformers:{llama}", "--output-dir", str(out), "--overwrite"]
    assert main(argv) == 0
    return json.loads((out / "stats.json").read_text())["usage"]


def test_second_identical_run_is_served_from_the_cache(llama, tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    cache = tmp_path / "cache"
    first = eval_with_pointwise(llama, tmp_path / "a", "--llm-cache", str(cache))
    assert first["calls"] > 0 and first["cached_calls"] == 0
    second = eval_with_pointwise(llama, tmp_path / "b", "--llm-cache", str(cache))
    assert second["calls"] == 0 and second["cached_calls"] == first["calls"]
    assert (tmp_path / "a" / "run.trec").read_text().split("\n")[:3] == (tmp_path / "b" / "run.trec").read_text().split("\n")[:3]
    uncached = eval_with_pointwise(llama, tmp_path / "c", "--no-llm-cache")
    assert uncached["calls"] == first["calls"]
    assert ENV_VAR not in __import__("os").environ  # the command left the environment as it found it
