"""Shared by `personarag train pointwise` and `train listwise`: flags from `LLMSFTConfig`, then one run."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from personarag.training.common import add_config_arguments
    from personarag.training.llm_sft import LLMSFTConfig

    parser.add_argument("--config", metavar="FILE", help="YAML file of options; flags override it")
    add_config_arguments(parser, LLMSFTConfig, skip=("kind",))
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue the run in OUTPUT_DIR from its last checkpoint")
    mode.add_argument("--overwrite", action="store_true", help="delete the previous run in OUTPUT_DIR and start again")


def run(args: argparse.Namespace, kind: str) -> int:
    """The subcommand sets `kind` (a `kind:` key in the config file is overridden by it)."""
    import dataclasses

    from personarag.training.common import load_config
    from personarag.training.llm_sft import LLMSFTConfig, train_llm_sft

    flags = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(LLMSFTConfig) if f.name != "kind"}
    config = load_config(LLMSFTConfig, args.config, kind=kind, **flags)
    result = train_llm_sft(config, resume=args.resume, overwrite=args.overwrite)
    sys.stdout.write(
        f"trained a LoRA adapter on {result.rows} rows ({result.dropped} too long) in {result.seconds:.0f} s, "
        f"train loss {result.train_loss:.4f}\n"
        f"saved to {result.output_dir}; rerank with the spec {kind}:{config.base}+{result.output_dir}\n"
    )
    return 0
