"""The `personarag` command line: `personarag eval beir ...`, later `eval bright`, `train ...`, `index`, `run`.

Each subcommand is one module in `personarag/commands/` that defines
    GROUP: str | None    "eval", "train", ... or None for a top-level command
    NAME: str            the subcommand word
    HELP: str            one line for --help
    add_arguments(parser: argparse.ArgumentParser) -> None
    run(args: argparse.Namespace) -> int
Command modules keep heavy imports inside `run`, so `personarag --help` stays fast.
To add a command: write the module and add one line to COMMANDS.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from personarag.errors import PersonaragError

COMMANDS: list[str] = [
    "personarag.commands.eval_beir",
    "personarag.commands.eval_bright",
    "personarag.commands.eval_lamp",
    "personarag.commands.train_cross_encoder",
    "personarag.commands.train_pointwise",
    "personarag.commands.train_listwise",
    "personarag.commands.train_grpo",
]

GROUPS: dict[str, str] = {
    "eval": "evaluate a pipeline on a benchmark (BEIR, BRIGHT, LaMP)",
    "train": "fine-tune rerankers, LLM rerankers and user encoders",
}


def build_parser() -> argparse.ArgumentParser:
    from personarag import __version__

    parser = argparse.ArgumentParser(prog="personarag", description="Personalized RAG and LLM reranking toolkit.")
    parser.add_argument("--version", action="version", version=f"personarag {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for module_name in COMMANDS:
        module = importlib.import_module(module_name)
        group = getattr(module, "GROUP", None)
        if group is None:
            container = top
        else:
            if group not in groups:
                group_parser = top.add_parser(group, help=GROUPS.get(group, ""), description=GROUPS.get(group))
                groups[group] = group_parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
                group_parser.set_defaults(_group_parser=group_parser)
            container = groups[group]
        sub = container.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run, _group_parser=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run = getattr(args, "_run", None)
    if run is None:  # a bare `personarag` or `personarag eval`: show what can follow
        (getattr(args, "_group_parser", None) or parser).print_help()
        return 2
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler()
    handler.setLevel(level)  # some libraries set DEBUG on their own loggers; keep them quiet too
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    try:
        return int(run(args) or 0)
    except PersonaragError as error:
        sys.stderr.write(f"personarag: error: {error}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
