"""`personarag eval rerank`: rerank a first stage read from a file and score it.

    personarag eval rerank --candidates BM25_dl19.json --qrels qrels.dl19-passage.txt \\
        --relevance-level 2 --reranker pointwise:transformers:PATH --rerank-depth 20 --output-dir OUT

The candidates come from a rank_llm / Ragnarok request file (`--candidates`, JSON list or
JSONL) or from a TREC run with its documents and topics (`--run`, `--docs`, `--topics`).
Without `--reranker` the run reproduces the first stage. Writes what `eval beir` writes:
OUT/run.trec, metrics.json, per_query.json, stats.json and config.json (a valid `--config`);
each finished query goes to OUT/rankings.jsonl at once, so a rerun resumes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from personarag.commands import common
from personarag.errors import InputError

GROUP = "eval"
NAME = "rerank"
HELP = "rerank first-stage candidates from a file (rank_llm / Ragnarok requests or a TREC run), score them"

CONFIG_KEYS = (
    "candidates", "run", "docs", "topics", "qrels", "rerankers", "k", "rerank_depth", "measures",
    "relevance_level", "batch_size", "max_queries", "output_dir",
)
PATH_KEYS = ("candidates", "run", "docs", "topics", "qrels")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--candidates", metavar="FILE", help="rank_llm / Ragnarok request file (JSON list or JSONL)")
    parser.add_argument("--run", metavar="FILE", help="a TREC run file (with --docs and --topics) instead of --candidates")
    parser.add_argument("--docs", metavar="FILE", help="texts of the run's documents: JSONL or TSV docid<TAB>text")
    parser.add_argument("--topics", metavar="FILE", help="query texts: TSV qid<TAB>text or JSONL")
    parser.add_argument("--qrels", metavar="FILE", help="TREC or BEIR qrels")
    parser.add_argument("--reranker", metavar="SPEC", action="append", help="a reranker stage; repeat for several")
    parser.add_argument("--k", type=int, help="candidates taken per query (default: all in the file)")
    parser.add_argument("--rerank-depth", type=int, metavar="N", help="rerank only the top N (default: all k)")
    parser.add_argument("--batch-size", type=int, metavar="N", help="queries per pipeline call (default: 64)")
    parser.add_argument("--measures", nargs="+", metavar="M", help="ir_measures names (default: nDCG@10 MRR@10 Recall@100 MAP)")
    parser.add_argument("--relevance-level", type=int, metavar="L",
                        help="lowest grade counted relevant by Recall/MAP/MRR (TREC DL: 2); nDCG keeps graded gains")
    parser.add_argument("--max-queries", type=int, metavar="N", help="evaluate only the first N judged queries")
    common.add_run_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from personarag.experiment.runner import Experiment

    file = common.read_config_file(args.config, CONFIG_KEYS)
    if file.get("command", "eval rerank") != "eval rerank":
        raise InputError(f"{args.config} is the config of `personarag {file['command']}`, not `eval rerank`")
    settings = _settings(args, file)
    with common.claimed_output_dir(settings["output_dir"]) as out:
        pipeline, data = build(settings)
        run_config = {"command": "eval rerank", **{key: settings[key] for key in (
            *PATH_KEYS, "max_queries", "measures", "relevance_level")}}
        experiment = Experiment(pipeline, data, settings["measures"] or data.default_measures, output_dir=out,
                                batch_size=settings["batch_size"], overwrite=args.overwrite, config=run_config,
                                prefix="rerank-" + _safe(data.name), **common.engine_settings(args))
        result = next(iter(experiment.run().systems.values()))
    coverage = data.coverage
    sys.stdout.write(f"{data.name} ({len(data.queries)} judged queries of {coverage['queries']} with candidates; "
                     f"{coverage['not_in_qrels']} not in the qrels), run {result.run_name}\n")
    sys.stdout.write(result.details.format_table() + "\n")
    sys.stdout.write(f"wrote {out}/run.trec, metrics.json, per_query.json, stats.json, config.json\n")
    return 0


def build(settings: dict[str, Any]) -> tuple[Any, Any]:
    """The pipeline (checked before the data is read) and the CandidateDataset."""
    from personarag.evaluation.candidates import read_candidates, read_trec_candidates
    from personarag.evaluation.qrels import Qrels
    from personarag.experiment.candidates import CandidateDataset, measures_at_level
    from personarag.experiment.preflight import check_pipeline
    from personarag.pipeline import Pipeline

    pipeline = Pipeline(settings["rerankers"], k=settings["k"] or 1, rerank_depth=settings["rerank_depth"])
    check_pipeline(pipeline)
    if settings["candidates"]:
        candidates = read_candidates(settings["candidates"])
    else:
        candidates = read_trec_candidates(settings["run"], settings["docs"], settings["topics"])
    if settings["k"] is None:
        pipeline.k = max(candidates.depth, 1)
    qrels = Qrels.read(settings["qrels"])
    data = CandidateDataset(candidates, qrels, max_queries=settings["max_queries"],
                            relevance_level=settings["relevance_level"])
    if settings["measures"]:
        settings["measures"] = measures_at_level(settings["measures"], settings["relevance_level"])
    return pipeline, data


def _settings(args: argparse.Namespace, file: dict[str, Any]) -> dict[str, Any]:
    from personarag.evaluation.metrics import parse_measure

    settings: dict[str, Any] = {}
    for key in PATH_KEYS:
        value = common.pick(getattr(args, key), file, key)
        settings[key] = str(Path(value).expanduser().resolve()) if value else None
    if bool(settings["candidates"]) == bool(settings["run"]):
        raise InputError("give exactly one of --candidates FILE or --run FILE (with --docs and --topics)")
    if settings["run"] and not (settings["docs"] and settings["topics"]):
        raise InputError("--run needs --docs FILE (document texts) and --topics FILE (query texts)")
    if not settings["qrels"]:
        raise InputError("give --qrels FILE (or qrels in the config)")
    section = common.check_pipeline_section(file)
    rerankers = args.reranker if args.reranker is not None else file.get("rerankers", section.get("stages") or [])
    settings["rerankers"] = [rerankers] if isinstance(rerankers, (str, dict)) else list(rerankers)
    settings["k"] = common.pick(args.k, file, "k")
    settings["rerank_depth"] = common.pick(args.rerank_depth, file, "rerank_depth", section.get("rerank_depth"))
    settings["batch_size"] = common.pick(args.batch_size, file, "batch_size", 64)
    settings["max_queries"] = common.pick(args.max_queries, file, "max_queries")
    settings["relevance_level"] = common.pick(args.relevance_level, file, "relevance_level")
    settings["output_dir"] = common.pick(args.output_dir, file, "output_dir")
    measures = common.pick(args.measures, file, "measures")
    settings["measures"] = [measures] if isinstance(measures, str) else measures
    common.positive_ints(settings, "batch_size", "max_queries", "k", "rerank_depth", "relevance_level")
    for measure in settings["measures"] or ():
        parse_measure(measure)
    return settings


def _safe(text: str) -> str:
    from personarag.experiment.candidates import safe_name

    return safe_name(text)
