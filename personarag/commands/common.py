"""What every run-producing command shares: config files, run names, output folders, versions."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from personarag.errors import InputError
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


PIPELINE_KEYS = ("personarag_config", "stages", "k", "rerank_depth", "context_k")
# keys a run writes into its config.json, so that file can be passed back as --config
RECORDED_KEYS = ("command", "run_name", "versions", "pipeline", "data")


def pipeline_settings(args: argparse.Namespace, file: Mapping[str, Any]) -> dict[str, Any]:
    """retriever, rerankers, k, rerank_depth and batch_size from the flags, else the config file,
    else the `pipeline` a previous run's config.json recorded, else the defaults."""
    pipeline_file = check_pipeline_section(file)
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


def ranking_settings(args: argparse.Namespace, file: Mapping[str, Any], default_measures: Iterable[str]) -> dict[str, Any]:
    """What `eval beir` and `eval bright` share: the pipeline settings, measures (checked before any
    indexing), max_queries, output_dir and cache_dir, from the flags, else the file, else defaults."""
    from personarag.evaluation.metrics import parse_measure

    measures = pick(args.measures, file, "measures", list(default_measures))
    settings = {
        **pipeline_settings(args, file),
        "measures": [measures] if isinstance(measures, str) else [str(m) for m in measures],
        "max_queries": pick(args.max_queries, file, "max_queries"),
        "output_dir": pick(args.output_dir, file, "output_dir"),
        "cache_dir": pick(args.cache_dir, file, "cache_dir"),
    }
    positive_ints(settings, "batch_size", "max_queries", "k", "rerank_depth")
    for measure in settings["measures"]:
        parse_measure(measure)
    return settings


def check_pipeline_section(file: Mapping[str, Any]) -> Mapping[str, Any]:
    """The `pipeline:` mapping of a config file; unknown keys under it are an error, not ignored."""
    section = file.get("pipeline") or {}
    if not isinstance(section, Mapping):
        raise InputError(f"'pipeline' in the config must be a mapping with keys {list(PIPELINE_KEYS)}, got {section!r}")
    unknown = sorted(set(section) - set(PIPELINE_KEYS))
    if unknown:
        raise InputError(f"unknown keys under 'pipeline': {unknown}; valid keys: {list(PIPELINE_KEYS)}")
    return section


def positive_ints(settings: Mapping[str, Any], *keys: str) -> None:
    for key in keys:
        value = settings.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise InputError(f"{key} must be a positive integer, got {value!r}")


@contextmanager
def claimed_output_dir(path: str | None) -> Iterator[Path]:
    """OUT, checked (not a file, writable, not full) and locked for the run, before any data or
    model is loaded; a second run into OUT meanwhile is refused at once."""
    from personarag.experiment.artifacts import FolderLock, check_output_dir

    if not path:
        raise InputError("give --output-dir OUT (or output_dir in the config file)")
    out = check_output_dir(path)
    with FolderLock(out):
        yield out


def read_config_file(path: str | None, allowed: Iterable[str]) -> dict[str, Any]:
    """The run config in `path` (empty without one); unknown keys are an error, not ignored."""
    if not path:
        return {}
    config = load_config(path)
    allowed = set(allowed) | set(RECORDED_KEYS)
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


