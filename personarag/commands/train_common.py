"""What the `personarag train ...` commands share: flags from the trainer's config dataclass,
--resume / --overwrite, and one run that prints the trainer's report. A command module is
`add_arguments, run = training_command(...)` plus its report."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

Report = Callable[[Any, Any], str]


def add_training_arguments(parser: argparse.ArgumentParser, config_cls: type, *, skip: tuple[str, ...] = ()) -> None:
    """`--config FILE`, one flag per field of `config_cls` (but `skip`), and --resume | --overwrite."""
    from personarag.training.common import add_config_arguments

    parser.add_argument("--config", metavar="FILE", help="YAML file of options; flags override it")
    add_config_arguments(parser, config_cls, skip=skip)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue the run in OUTPUT_DIR from its last checkpoint")
    mode.add_argument("--overwrite", action="store_true", help="delete the previous run in OUTPUT_DIR and start again")


def training_command(
    module: str, config_name: str, train_name: str, report: Report, *, fixed: Mapping[str, Any] | None = None
) -> tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]:
    """`(add_arguments, run)` of a command that trains with `module.train_name(config, resume=, overwrite=)`.

    The config is `module.config_name` from `--config` and the flags; `fixed` options are set by the
    command itself (no flag; they override the config file). `report(config, result)` is printed.
    The module is imported only when the command is used, so `personarag --help` stays fast.
    """
    fixed = dict(fixed or {})

    def config_cls() -> type:
        return getattr(importlib.import_module(module), config_name)

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        add_training_arguments(parser, config_cls(), skip=tuple(fixed))

    def run(args: argparse.Namespace) -> int:
        from personarag.training.common import load_config

        cls = config_cls()
        flags = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(cls) if f.name not in fixed}
        config = load_config(cls, args.config, **flags, **fixed)
        result = getattr(importlib.import_module(module), train_name)(config, resume=args.resume, overwrite=args.overwrite)
        sys.stdout.write(report(config, result))
        return 0

    return add_arguments, run


def llm_sft_report(config: Any, result: Any) -> str:
    return (
        f"trained a LoRA adapter on {result.rows} rows ({result.dropped} too long) in {result.seconds:.0f} s, "
        f"train loss {result.train_loss:.4f}\n"
        f"saved to {result.output_dir}; rerank with the spec {config.kind}:{config.base}+{result.output_dir}\n"
    )


def llm_sft_command(kind: str) -> tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]:
    """The LLM SFT command for `kind` ("pointwise" or "listwise"); the command sets `kind`."""
    return training_command("personarag.training.llm_sft", "LLMSFTConfig", "train_llm_sft", llm_sft_report, fixed={"kind": kind})
