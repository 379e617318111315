"""What the `personarag train ...` commands share: flags from a config dataclass, --resume /
--overwrite, and the LLM SFT commands (`train pointwise`, `train listwise`) built from one kind."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any


def add_training_arguments(parser: argparse.ArgumentParser, config_cls: type, *, skip: tuple[str, ...] = ()) -> None:
    """`--config FILE`, one flag per field of `config_cls` (but `skip`), and --resume | --overwrite."""
    from personarag.training.common import add_config_arguments

    parser.add_argument("--config", metavar="FILE", help="YAML file of options; flags override it")
    add_config_arguments(parser, config_cls, skip=skip)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue the run in OUTPUT_DIR from its last checkpoint")
    mode.add_argument("--overwrite", action="store_true", help="delete the previous run in OUTPUT_DIR and start again")


def llm_sft_command(kind: str) -> tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]:
    """`(add_arguments, run)` of the LLM SFT command for `kind` ("pointwise" or "listwise")."""

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        from personarag.training.llm_sft import LLMSFTConfig

        add_training_arguments(parser, LLMSFTConfig, skip=("kind",))

    def run(args: argparse.Namespace) -> int:
        return run_llm_sft(args, kind)

    return add_arguments, run


def run_llm_sft(args: Any, kind: str) -> int:
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
