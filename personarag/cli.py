"""The `personarag` command line: `personarag eval beir ...`, later `eval bright`, `train ...`, `index`, `run`.

Each subcommand is one module in `personarag/commands/` that defines
    GROUP: str | None    "eval", "train", ... or None for a top-level command
    NAME: str            the subcommand word
    HELP: str            one line for --help
    add_arguments(parser: argparse.ArgumentParser) -> None
    run(args: argparse.Namespace) -> int
or, for several subcommands of one group in one module, SUBCOMMANDS: a list of objects
with those NAME, HELP, add_arguments and run.
Command modules keep heavy imports inside `run`, so `personarag --help` stays fast.
To add a command: write the module and add one line to COMMANDS.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import logging
import sys
from collections.abc import Iterator, Sequence

from personarag.errors import PersonaragError

COMMANDS: list[str] = [
    "personarag.commands.demo",
    "personarag.commands.eval_beir",
    "personarag.commands.eval_bright",
    "personarag.commands.eval_lamp",
    "personarag.commands.eval_rerank",
    "personarag.commands.compare",
    "personarag.commands.train_cross_encoder",
    "personarag.commands.train_llm_sft",
    "personarag.commands.train_pointwise",
    "personarag.commands.train_listwise",
    "personarag.commands.train_grpo",
    "personarag.commands.train_user_encoder",
    "personarag.commands.train_llm_feedback",
    "personarag.commands.users",
    "personarag.commands.serve",
    "personarag.commands.run_requests",
]

GROUPS: dict[str, str] = {
    "eval": "evaluate a pipeline on a benchmark (BEIR, BRIGHT, LaMP, first-stage candidate files)",
    "train": "fine-tune rerankers, LLM rerankers and user encoders",
    "users": "the user store: import, export, add and delete users and their history items",
}


def build_parser() -> argparse.ArgumentParser:
    from personarag import __version__

    parser = argparse.ArgumentParser(prog="personarag", description="Personalized RAG and LLM reranking toolkit.")
    parser.add_argument("--version", action="version", version=f"personarag {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument("--llm-cache", metavar="DIR",
                       help="request cache for LLMs built with cache_dir='auto' (default: $PERSONARAG_CACHE_DIR, "
                            "else ~/.cache/personarag), so a repeated run makes no LLM call")
    cache.add_argument("--no-llm-cache", action="store_true", help="do not cache LLM requests in this run")
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
        for command in getattr(module, "SUBCOMMANDS", None) or [module]:  # a module may define several
            sub = container.add_parser(command.NAME, help=command.HELP, description=command.HELP)
            command.add_arguments(sub)
            sub.set_defaults(_run=command.run, _group_parser=None)
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
        with _llm_cache(args.llm_cache, args.no_llm_cache):
            return int(run(args) or 0)
    except PersonaragError as error:
        sys.stderr.write(f"personarag: error: {error}\n")
        return 2


@contextlib.contextmanager
def _llm_cache(directory: str | None, disabled: bool) -> Iterator[None]:
    """Evaluation runs cache LLM requests by default; the library alone does not (see llm/cache.py).

    Scoped to one command, so an in-process caller's environment is left as it was."""
    from personarag.llm.cache import ENV_VAR

    previous = os.environ.get(ENV_VAR)
    if disabled:
        os.environ.pop(ENV_VAR, None)
    elif directory or previous is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        os.environ[ENV_VAR] = directory or os.path.join(base, "personarag")
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = previous


if __name__ == "__main__":
    sys.exit(main())
