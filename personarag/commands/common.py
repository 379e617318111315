"""What every run-producing command shares: config files, run names, output folders, versions."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from personarag.errors import InputError
from personarag.experiment.artifacts import (  # noqa: F401 (the commands' names for them)
    batched,
    library_versions,
    prepare_output_dir,
    run_name,
    write_json,
)
from personarag.pipeline import load_config

T = TypeVar("T")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON file describing the run; flags override it")
    parser.add_argument("--output-dir", metavar="OUT", help="folder for run.trec, metrics.json and config.json")
    parser.add_argument("--overwrite", action="store_true", help="replace the results of a different run in OUT")


def add_pipeline_arguments(parser: argparse.ArgumentParser, retriever_help: str) -> None:
    """The stage and batching flags every `eval` command shares; `pipeline_settings` reads them."""
    parser.add_argument("--retriever", metavar="SPEC", help=retriever_help)
    parser.add_argument("--reranker", metavar="SPEC", action="append", help="a reranker stage; repeat for several")
    parser.add_argument("--k", type=int, help="candidates retrieved per query (default: 100)")
    parser.add_argument("--rerank-depth", type=int, metavar="N", help="rerank only the top N (default: all k)")
    parser.add_argument("--batch-size", type=int, metavar="N", help="queries per pipeline call (default: 64)")


def pipeline_settings(args: argparse.Namespace, file: Mapping[str, Any]) -> dict[str, Any]:
    """retriever, rerankers, k, rerank_depth and batch_size from the flags, else the config file,
    else the `pipeline` a previous run's config.json recorded, else the defaults."""
    pipeline_file = file.get("pipeline") or {}
    stages = list(pipeline_file.get("stages") or [])
    retriever = pick(args.retriever, file, "retriever", stages[0] if stages else None)
    if retriever is None:
        raise InputError("give --retriever SPEC (or retriever in the config), e.g. --retriever bm25")
    rerankers = args.reranker if args.reranker is not None else file.get("rerankers", stages[1:])
    return {
        "retriever": retriever,
        "rerankers": [rerankers] if isinstance(rerankers, (str, dict)) else list(rerankers),
        "k": pick(args.k, file, "k", pipeline_file.get("k", 100)),
        "rerank_depth": pick(args.rerank_depth, file, "rerank_depth", pipeline_file.get("rerank_depth")),
        "batch_size": pick(args.batch_size, file, "batch_size", 64),
    }


def read_config_file(path: str | None, allowed: Iterable[str]) -> dict[str, Any]:
    """The run config in `path` (empty without one); unknown keys are an error, not ignored."""
    if not path:
        return {}
    config = load_config(path)
    allowed = set(allowed)
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise InputError(f"{path}: unknown keys {unknown}; allowed: {sorted(allowed)}")
    return config


def pick(flag: T | None, config: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """A flag given on the command line wins over the config file, which wins over the default."""
    if flag is not None:
        return flag
    value = config.get(key)
    return default if value is None else value


