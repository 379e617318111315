"""`personarag train llm-feedback`: a model distilled from an LLM's feedback on the first examples
of a LaMP split. Two targets:

- `--target collaborative-scorer` (default): the collaborative retriever's scorer (CFRAG's
  retriever fine-tuning); options of `personarag.training.personal_runs.LLMFeedbackRunConfig`;
  loads as `collaborative:MODEL` with `scorer=OUTPUT_DIR`. `--resume` asks the LLM only for
  the training queries whose feedback is not in OUTPUT_DIR/feedback.jsonl yet.
- `--target personalized-reranker`: a cross-encoder over (user context + query, candidate)
  trained on soft targets from the candidates' utilities; options of
  `personarag.training.personal_reranker.PersonalRerankerRunConfig`; loads as
  `personal-cross-encoder:OUTPUT_DIR`.

    personarag train llm-feedback --config eval/train_llm_feedback_lamp3.yaml [--resume | --overwrite]
    personarag train llm-feedback --config eval/train_personal_reranker_lamp3.yaml

The target is `--target` or the config file's `target:`; every option has a `--flag-name`
(flags win over the YAML file); a flag of the other target is an error.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from typing import Any

from personarag.errors import InputError

GROUP = "train"
NAME = "llm-feedback"
HELP = "distill the collaborative scorer or a personalized reranker from an LLM's feedback on a LaMP split"

TARGETS = {
    "collaborative-scorer": ("personarag.training.personal_runs", "LLMFeedbackRunConfig", "run_llm_feedback"),
    "personalized-reranker": ("personarag.training.personal_reranker", "PersonalRerankerRunConfig", "run_personal_reranker"),
}


def _config_cls(target: str) -> type:
    module, name, _ = TARGETS[target]
    return getattr(importlib.import_module(module), name)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from personarag.commands.train_common import add_training_arguments
    from personarag.training.common import add_config_arguments

    parser.add_argument("--target", choices=sorted(TARGETS), default=None,
                        help="what to train (default: the config file's target, else collaborative-scorer)")
    add_training_arguments(parser, _config_cls("collaborative-scorer"))
    first = {f.name for f in dataclasses.fields(_config_cls("collaborative-scorer"))}
    other = _config_cls("personalized-reranker")
    add_config_arguments(parser, other, skip=tuple(first | {"target"}))


def _file_options(args: argparse.Namespace) -> dict[str, Any]:
    """The config file's options (without `target`, which picks the config class), {} without --config."""
    if not args.config:
        return {}
    import yaml
    from pathlib import Path

    path = Path(args.config)
    if not path.is_file():
        raise InputError(f"training config {path} does not exist")
    loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(loaded, dict):
        raise InputError(f"{path}: expected a mapping of option: value, got {type(loaded).__name__}")
    target = loaded.pop("target", None)
    if target is not None and target not in TARGETS:
        raise InputError(f"{path}: target must be one of {sorted(TARGETS)}, got {target!r}")
    if target is not None and args.target is not None and target != args.target:
        raise InputError(f"{path} says target: {target}, but --target {args.target} was given")
    args.target = args.target or target
    return loaded


def run(args: argparse.Namespace) -> int:
    from personarag.training.common import load_config

    options = _file_options(args)
    target = args.target or "collaborative-scorer"
    module, config_name, train_name = TARGETS[target]
    cls = _config_cls(target)
    own = {f.name for f in dataclasses.fields(cls)}
    foreign = sorted(
        f.name for other in TARGETS if other != target for f in dataclasses.fields(_config_cls(other))
        if f.name not in own and getattr(args, f.name, None) is not None
    )
    if foreign:
        raise InputError(f"--target {target} takes no {', '.join('--' + n.replace('_', '-') for n in foreign)}")
    flags = {name: getattr(args, name, None) for name in own if name != "target"}
    config = load_config(cls, None, **{**options, **{k: v for k, v in flags.items() if v is not None}})
    result = getattr(importlib.import_module(module), train_name)(config, resume=args.resume, overwrite=args.overwrite)
    sys.stdout.write(report(config, result) if target == "collaborative-scorer" else reranker_report(config, result))
    return 0


def report(config: Any, result: Any) -> str:
    weights = ", ".join(f"{w:.3f}" for w in result.weights)
    initial = ", ".join(f"{w:.3f}" for w in result.initial)
    return (f"trained the collaborative scorer on {result.queries} queries (the first {len(result.trained_on)} examples) "
            f"in {result.seconds:.0f} s; weights [{initial}] -> [{weights}]\n"
            f"saved to {result.scorer}; use it as collaborative:{config.model} with scorer={result.output_dir}\n")


def reranker_report(config: Any, result: Any) -> str:
    loss = "n/a" if result.train_loss is None else f"{result.train_loss:.4f}"
    return (f"trained the personalized reranker on {result.queries} examples ({config.utility} utility; "
            f"{len(result.held_out)} examples of other users held out) in {result.seconds:.0f} s, train loss {loss}\n"
            f"saved to {result.output_dir}; rerank with personal-cross-encoder:{result.output_dir}\n")
