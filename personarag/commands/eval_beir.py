"""`personarag eval beir`: run a pipeline over a BEIR split and score it.

Writes OUT/run.trec, OUT/metrics.json (ir_measures keys), OUT/per_query.json,
OUT/stats.json (timings, LLM usage) and OUT/config.json, which is itself a valid
`--config` file that reproduces the run. A thin adapter over `personarag.experiment`:
each finished query goes to OUT/rankings.jsonl at once, so rerunning the same command
after a crash or a kill redoes only the unfinished queries.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from personarag.commands import common
from personarag.errors import InputError
from personarag.evaluation.metrics import DEFAULT_MEASURES

GROUP = "eval"
NAME = "beir"
HELP = "retrieve (and rerank) a BEIR dataset split, write the TREC run and its metrics"

CONFIG_KEYS = ("dataset", "dataset_dir", "split", *common.RANKING_KEYS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--dataset-dir", metavar="DIR", help="a BEIR folder (corpus.jsonl, queries.jsonl, qrels/)")
    source.add_argument("--dataset", metavar="NAME", help="a BEIR dataset name, downloaded once into --cache-dir")
    parser.add_argument("--split", help="qrels split (default: test)")
    common.add_ranking_arguments(parser, DEFAULT_MEASURES, max_queries="evaluate only the first N judged queries",
                                 cache_dir="where --dataset downloads go (default: ~/.cache/personarag/beir)")


def run(args: argparse.Namespace) -> int:
    from personarag.evaluation.beir import load_beir
    from personarag.experiment.datasets import RankingDataset

    settings = _settings(args, common.read_run_config(args.config, "eval beir", CONFIG_KEYS))
    with common.claimed_output_dir(settings["output_dir"]) as out:
        pipeline = common.ranking_pipeline(settings)
        run_config = {
            "command": "eval beir",
            **{key: settings[key] for key in ("dataset", "dataset_dir", "split", "max_queries", "measures")},
        }
        source = settings["dataset"] or Path(settings["dataset_dir"]).name
        dataset = load_beir(settings["dataset_dir"] or settings["dataset"], settings["split"], cache_dir=settings["cache_dir"])
        data = RankingDataset.from_beir(dataset, settings["max_queries"])
        result = common.evaluate_ranking(pipeline, data, settings, out, overwrite=args.overwrite, config=run_config,
                                         prefix="beir-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", source),
                                         engine=common.engine_settings(args))
    sys.stdout.write(f"{dataset.name} ({settings['split']}, {len(data.queries)} queries), run {result.run_name}\n")
    sys.stdout.write(result.details.format_table() + "\n")
    sys.stdout.write(f"wrote {out}/run.trec, metrics.json, per_query.json, stats.json, config.json\n")
    return 0


def _settings(args: argparse.Namespace, file: dict[str, Any]) -> dict[str, Any]:
    if args.dataset or args.dataset_dir:  # a source on the command line replaces the file's
        dataset, dataset_dir = args.dataset, args.dataset_dir
    else:
        dataset, dataset_dir = file.get("dataset"), file.get("dataset_dir")
    if bool(dataset) == bool(dataset_dir):
        raise InputError("give exactly one of --dataset-dir DIR or --dataset NAME (or dataset_dir / dataset in the config)")
    return {
        "dataset": dataset,
        "dataset_dir": str(Path(dataset_dir).expanduser().resolve()) if dataset_dir else None,
        "split": common.pick(args.split, file, "split", "test"),
        **common.ranking_settings(args, file, DEFAULT_MEASURES),
    }
