"""`personarag eval bright`: run a pipeline over BRIGHT tasks and score them.

For each task: OUT/<task>/run.trec (excluded ids already removed, as BRIGHT's own
scoring does), metrics.json, per_query.json and, when a stage reasoned,
reasoning.jsonl. OUT/metrics.json holds each task's metrics and their average;
OUT/config.json reproduces the run (`--config OUT/config.json`). Each task is one
`personarag.experiment.Experiment` in OUT/<task>, resumable query by query.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from personarag.commands import common
from personarag.experiment import artifacts
from personarag.errors import InputError

GROUP = "eval"
NAME = "bright"
HELP = "retrieve (and rerank) BRIGHT tasks, remove excluded ids, write runs and per-task and average metrics"

CONFIG_KEYS = ("dataset_dir", "tasks", "long_documents", "reasoning", "query_rewriter", *common.RANKING_KEYS)
DEFAULT_MEASURES = ("nDCG@10", "Recall@100")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset-dir", metavar="DIR",
                        help="local BRIGHT data: DIR/<task>/{examples,documents}.jsonl or a hub snapshot "
                             "(DIR/<config>/<task>-*.parquet); without it, the hub dataset xlangai/BRIGHT")
    parser.add_argument("--task", action="append", metavar="TASK", help="a BRIGHT task; repeat, or 'all'")
    parser.add_argument("--long-documents", action="store_true", default=None, help="use the long_documents corpus")
    parser.add_argument("--reasoning", metavar="CONFIG", help="queries from a reasoning config, e.g. gpt4_reason")
    parser.add_argument("--query-rewriter", metavar="LLM", help="an LLM spec that reasons about each query first")
    common.add_ranking_arguments(parser, DEFAULT_MEASURES, max_queries="only the first N queries of each task",
                                 cache_dir="Hugging Face datasets cache for hub downloads")


def run(args: argparse.Namespace) -> int:
    from personarag.evaluation.bright import load_bright
    from personarag.experiment.datasets import RankingDataset
    from personarag.types import Usage

    settings = _settings(args, common.read_run_config(args.config, "eval bright", CONFIG_KEYS))
    with common.claimed_output_dir(settings["output_dir"]) as out:
        pipeline = common.ranking_pipeline(settings, _first_stage(settings))
        run_config = {
            "command": "eval bright",
            **{key: settings[key] for key in ("dataset_dir", "tasks", "long_documents", "reasoning", "max_queries", "measures")},
            "pipeline": pipeline.config(),
        }
        name = artifacts.run_name("bright", run_config)
        artifacts.prepare_output_dir(out, name, args.overwrite)
        artifacts.write_json(out / "config.json", {**run_config, "run_name": name, "batch_size": settings["batch_size"],
                                                 "versions": artifacts.library_versions()})
        metrics: dict[str, dict[str, float]] = {}
        usage = Usage()
        engine = common.engine_settings(args)
        with common.engine_session(engine):  # one cluster for every task
            for task_name in settings["tasks"]:
                task = load_bright(task_name, settings["dataset_dir"], long_documents=settings["long_documents"],
                                   reasoning=settings["reasoning"], cache_dir=settings["cache_dir"])
                data = RankingDataset.from_bright(task, settings["max_queries"], source=settings["dataset_dir"])
                task_config = {key: value for key, value in run_config.items() if key not in ("tasks", "pipeline")}
                result = common.evaluate_ranking(pipeline, data, settings, out / task_name, overwrite=args.overwrite,
                                                 config={**task_config, "task": task_name}, prefix=f"bright-{task_name}",
                                                 engine=engine)
                usage = usage + result.usage
                metrics[task_name] = result.metrics
                sys.stdout.write(f"{task_name}: {len(data.queries)} queries, {len(task.corpus)} documents\n")
        average = {m: sum(metrics[t][m] for t in metrics) / len(metrics) for m in settings["measures"]}
        artifacts.write_json(out / "metrics.json", {**metrics, "average": average})
        artifacts.write_json(out / "stats.json", {"usage": dataclasses.asdict(usage)})
    sys.stdout.write(_table(metrics, average, settings["measures"]) + "\n")
    sys.stdout.write(f"wrote {out}/<task>/run.trec and metrics, {out}/metrics.json, config.json\n")
    return 0


def _first_stage(settings: dict[str, Any]) -> Any:
    if not settings["query_rewriter"]:
        return settings["retriever"]
    return {"spec": "rewrite", "params": {"retriever": settings["retriever"], "llm": settings["query_rewriter"]}}


def _table(metrics: dict[str, dict[str, float]], average: dict[str, float], measures: list[str]) -> str:
    width = max(len("average"), *(len(t) for t in metrics))
    lines = ["task".ljust(width) + "".join(f"  {m:>10}" for m in measures)]
    for task, values in [*metrics.items(), ("average", average)]:
        lines.append(task.ljust(width) + "".join(f"  {values[m]:>10.4f}" for m in measures))
    return "\n".join(lines)


def _settings(args: argparse.Namespace, file: dict[str, Any]) -> dict[str, Any]:
    from personarag.evaluation.bright import TASKS, check_task

    tasks = args.task if args.task is not None else file.get("tasks")
    if not tasks:
        raise InputError(f"give --task TASK (repeatable) or --task all; tasks: {', '.join(TASKS)}")
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    tasks = list(TASKS) if tasks == ["all"] else [check_task(t) for t in tasks]
    dataset_dir = common.pick(args.dataset_dir, file, "dataset_dir")
    return {
        "dataset_dir": str(Path(dataset_dir).expanduser().resolve()) if dataset_dir else None,
        "tasks": tasks,
        "long_documents": bool(common.pick(args.long_documents, file, "long_documents", False)),
        "reasoning": common.pick(args.reasoning, file, "reasoning"),
        "query_rewriter": common.pick(args.query_rewriter, file, "query_rewriter"),
        **common.ranking_settings(args, file, DEFAULT_MEASURES),
    }
