"""`personarag eval beir`: run a pipeline over a BEIR split and score it.

Writes OUT/run.trec, OUT/metrics.json (ir_measures keys), OUT/per_query.json,
OUT/stats.json (timings, LLM usage) and OUT/config.json, which is itself a valid
`--config` file that reproduces the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

from personarag.commands import common
from personarag.errors import InputError

GROUP = "eval"
NAME = "beir"
HELP = "retrieve (and rerank) a BEIR dataset split, write the TREC run and its metrics"

logger = logging.getLogger(__name__)

CONFIG_KEYS = (
    "dataset", "dataset_dir", "split", "retriever", "rerankers", "k", "rerank_depth", "measures",
    "batch_size", "max_queries", "output_dir", "cache_dir", "pipeline",
    # written into config.json, so that file can be passed back as --config
    "command", "run_name", "versions",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--dataset-dir", metavar="DIR", help="a BEIR folder (corpus.jsonl, queries.jsonl, qrels/)")
    source.add_argument("--dataset", metavar="NAME", help="a BEIR dataset name, downloaded once into --cache-dir")
    parser.add_argument("--split", help="qrels split (default: test)")
    common.add_pipeline_arguments(parser, "e.g. bm25, bm25:rank_bm25, dense:PATH, rrf:bm25+dense:PATH")
    parser.add_argument("--measures", nargs="+", metavar="M", help="ir_measures names (default: nDCG@10 Recall@100 MAP MRR@10)")
    parser.add_argument("--max-queries", type=int, metavar="N", help="evaluate only the first N judged queries")
    parser.add_argument("--cache-dir", metavar="DIR", help="where --dataset downloads go (default: ~/.cache/personarag/beir)")
    common.add_run_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from personarag.evaluation.beir import load_beir
    from personarag.evaluation.metrics import evaluate, parse_measure
    from personarag.evaluation.runs import Run
    from personarag.pipeline import Pipeline
    from personarag.types import Usage

    file = common.read_config_file(args.config, CONFIG_KEYS)
    if file.get("command", "eval beir") != "eval beir":
        raise InputError(f"{args.config} is the config of `personarag {file['command']}`, not `eval beir`")
    settings = _settings(args, file)
    for measure in settings["measures"]:
        parse_measure(measure)  # fail before any indexing

    pipeline = Pipeline(
        [settings["retriever"], *settings["rerankers"]], k=settings["k"], rerank_depth=settings["rerank_depth"]
    )
    if pipeline.retriever is None:
        raise InputError(f"the first stage must be a retriever, got {settings['retriever']!r}")
    run_config = {
        "command": "eval beir",
        "dataset": settings["dataset"],
        "dataset_dir": settings["dataset_dir"],
        "split": settings["split"],
        "max_queries": settings["max_queries"],
        "measures": settings["measures"],
        "pipeline": pipeline.config(),
    }
    source = settings["dataset"] or Path(settings["dataset_dir"]).name
    name = common.run_name("beir-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", source), run_config)
    if not settings["output_dir"]:
        raise InputError("give --output-dir OUT (or output_dir in the config file)")
    out = common.prepare_output_dir(settings["output_dir"], name, args.overwrite)

    started = time.perf_counter()
    dataset = load_beir(settings["dataset_dir"] or settings["dataset"], settings["split"], cache_dir=settings["cache_dir"])
    queries, qrels = dataset.queries, dataset.qrels
    if settings["max_queries"] is not None:
        queries = queries[: settings["max_queries"]]
        qrels = qrels.subset(q.id for q in queries)
    loaded = time.perf_counter()
    logger.info("indexing %d documents", len(dataset.corpus))
    pipeline.index(dataset.corpus)
    indexed = time.perf_counter()
    rankings = _retrieve(pipeline, queries, settings["batch_size"])
    retrieved = time.perf_counter()
    run_ = Run.from_rankings(rankings, name=name)
    result = evaluate(run_, qrels, settings["measures"])

    run_.write_trec(out / "run.trec", name=name)
    common.write_json(out / "metrics.json", result.aggregate)
    common.write_json(out / "per_query.json", result.per_query)
    usage = Usage.total(r.usage for r in rankings)
    common.write_json(out / "stats.json", {
        "queries": len(queries),
        "judged_queries": result.num_queries,
        "queries_without_results": len(result.missing_queries),
        "documents": len(dataset.corpus),
        "seconds": {
            "load": round(loaded - started, 3),
            "index": round(indexed - loaded, 3),
            "retrieve": round(retrieved - indexed, 3),
        },
        "usage": dataclasses.asdict(usage),
    })
    common.write_json(out / "config.json", {
        **run_config,
        "run_name": name,
        "batch_size": settings["batch_size"],
        "versions": common.library_versions(),
    })
    sys.stdout.write(f"{dataset.name} ({settings['split']}, {len(queries)} queries), run {name}\n")
    sys.stdout.write(result.format_table() + "\n")
    sys.stdout.write(f"wrote {out}/run.trec, metrics.json, per_query.json, stats.json, config.json\n")
    return 0


def _settings(args: argparse.Namespace, file: dict[str, Any]) -> dict[str, Any]:
    from personarag.evaluation.metrics import DEFAULT_MEASURES

    if args.dataset or args.dataset_dir:  # a source on the command line replaces the file's
        dataset, dataset_dir = args.dataset, args.dataset_dir
    else:
        dataset, dataset_dir = file.get("dataset"), file.get("dataset_dir")
    if bool(dataset) == bool(dataset_dir):
        raise InputError("give exactly one of --dataset-dir DIR or --dataset NAME (or dataset_dir / dataset in the config)")
    pipeline = common.pipeline_settings(args, file)
    measures = common.pick(args.measures, file, "measures", list(DEFAULT_MEASURES))
    if isinstance(measures, str):
        measures = [measures]
    settings = {
        "dataset": dataset,
        "dataset_dir": str(Path(dataset_dir).expanduser().resolve()) if dataset_dir else None,
        "split": common.pick(args.split, file, "split", "test"),
        **pipeline,
        "measures": [str(m) for m in measures],
        "max_queries": common.pick(args.max_queries, file, "max_queries"),
        "output_dir": common.pick(args.output_dir, file, "output_dir"),
        "cache_dir": common.pick(args.cache_dir, file, "cache_dir"),
    }
    for key in ("batch_size", "max_queries"):
        value = settings[key]
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise InputError(f"{key} must be a positive integer, got {value!r}")
    return settings


def _retrieve(pipeline: Any, queries: list, batch_size: int) -> list:
    from tqdm import tqdm

    rankings = []
    with tqdm(total=len(queries), unit="query", desc="retrieve", disable=None) as bar:
        for batch in common.batched(queries, batch_size):
            rankings.extend(pipeline.retrieve(batch))
            bar.update(len(batch))
    return rankings
