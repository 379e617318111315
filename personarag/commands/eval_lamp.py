"""`personarag eval lamp`: personalized generation on a LaMP task, resumable, and its metrics.

    personarag eval lamp --task LaMP-3 --questions dev_questions.json --outputs dev_outputs.json \
        --retriever history:bm25 --generator lamp:transformers:PATH --k 5 --output-dir OUT

Data: `--questions`/`--outputs` files, or `--split dev [--split-kind time]` to use the
official files (downloaded once into `--cache-dir`). `--retriever none` is the
no-retrieval baseline. `--llm-option threads=1` (repeatable; or `llm_options:` in a config)
gives options to every LLM the stages build from a spec. Writes OUT/predictions.jsonl, retrieved.jsonl, metrics.json,
stats.json and config.json (see `personarag.evaluation.lamp_runner`); rerunning the same
command after a crash continues where it stopped.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path
from typing import Any

from personarag.commands import common
from personarag.errors import InputError

GROUP = "eval"
NAME = "lamp"
HELP = "generate for a LaMP task with retrieval from each user's profile, write predictions and metrics (resumable)"

CONFIG_KEYS = (
    "task", "questions", "outputs", "split", "split_kind", "cache_dir", "retriever", "rerankers", "generator",
    "k", "depth", "max_prompt_tokens", "max_new_tokens", "answer_mode", "batch_size", "max_examples", "output_dir",
    "llm_options",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", help="LaMP-1 .. LaMP-7 (also LaMP_3, lamp3)")
    parser.add_argument("--questions", metavar="FILE", help="a LaMP *_questions.json file")
    parser.add_argument("--outputs", metavar="FILE", help="the matching *_outputs.json file")
    parser.add_argument("--split", choices=("train", "dev", "test"), help="use the official files of this split instead")
    parser.add_argument("--split-kind", choices=("user", "time"), help="user-based (default) or time-based official split")
    parser.add_argument("--cache-dir", metavar="DIR", help="where official files are downloaded (default: ~/.cache/personarag/lamp)")
    parser.add_argument("--retriever", metavar="SPEC", help="history:bm25, history:dense:MODEL, recency, random, collaborative:..., or none")
    common.add_stage_arguments(parser)  # --reranker, --reranker-depth, --llm-option
    parser.add_argument("--generator", metavar="SPEC", help="lamp:LLM_SPEC, e.g. lamp:transformers:PATH (the task is passed on)")
    parser.add_argument("--k", type=int, help="profile items given to the generator (default: 5)")
    parser.add_argument("--depth", type=int, help="items retrieved before reranking (default: k, or 20 with a reranker)")
    parser.add_argument("--max-prompt-tokens", type=int, help="prompt token budget of the generator (default: its own)")
    parser.add_argument("--max-new-tokens", type=int, help="generated tokens (default: the task's)")
    parser.add_argument("--answer-mode", choices=("generate", "choose"),
                        help="LaMP-1/2/3: generate text (default) or choose the most likely label by log-probability")
    parser.add_argument("--batch-size", type=int, help="examples per batch; each batch is saved as it finishes (default: 8)")
    parser.add_argument("--max-examples", type=int, metavar="N", help="only the first N examples")
    common.add_run_arguments(parser)


def build_generator(spec: Any, task: str, **options: Any) -> Any:
    """A generator from a spec string or config, given the task (and options) when its class takes them."""
    from personarag import registry
    from personarag.component import Component
    from personarag.evaluation.lamp_tasks import task_name

    if isinstance(spec, Component):
        fixed = getattr(spec, "task", None)  # None: the generator takes each query's task
        if fixed is not None and fixed != task:
            raise InputError(f"the generator is set up for {fixed}, but the run is for {task}")
        return registry.build(spec, role="generator")
    is_config = isinstance(spec, dict)
    params = dict(spec.get("params") or {}) if is_config else {}
    name, _ = registry.split_spec(spec["spec"] if is_config else spec)
    entry = registry.REGISTRY.get(name)
    if entry is None or entry.role != "generator":
        return registry.build(spec, role="generator")  # raises, listing the valid generators
    accepted = inspect.signature(entry.load().__init__).parameters
    if "task" in accepted:
        if params.get("task") is not None and task_name(params["task"]) != task:
            raise InputError(f"the generator is set up for {params['task']}, but the run is for {task}")
        params["task"] = task
    for key, value in options.items():
        if value is not None:
            if key not in accepted:
                raise InputError(f"generator {name!r} takes no {key!r} option")
            params[key] = value
    if is_config:
        return registry.build_from_config({"spec": spec["spec"], "params": params}, role="generator")
    return registry.build(spec, role="generator", **params)


def run(args: argparse.Namespace) -> int:
    from personarag.evaluation.lamp import load_lamp, load_lamp_split
    from personarag.evaluation.lamp_runner import run_lamp
    from personarag.evaluation.lamp_tasks import task_name
    from personarag.experiment.preflight import check_pipeline
    from personarag.pipeline import Pipeline

    file = common.read_run_config(args.config, "eval lamp", CONFIG_KEYS)
    common.check_pipeline_section(file)
    task = common.pick(args.task, file, "task")
    if not task:
        raise InputError("give --task (LaMP-1 .. LaMP-7)")
    task = task_name(task)
    questions = common.pick(args.questions, file, "questions")
    outputs = common.pick(args.outputs, file, "outputs")
    split = common.pick(args.split, file, "split")
    split_kind = common.pick(args.split_kind, file, "split_kind", "user")
    if bool(questions) == bool(split):
        raise InputError("give either --questions FILE [--outputs FILE] or --split train|dev|test")
    retriever = common.pick(args.retriever, file, "retriever")
    rerankers = common.reranker_stages(args, file)
    generator_spec = common.pick(args.generator, file, "generator")
    if retriever is None:
        raise InputError("give --retriever SPEC (history:bm25, recency, random, ... or none)")
    if not generator_spec:
        raise InputError("give --generator SPEC, e.g. lamp:transformers:PATH")
    k = common.pick(args.k, file, "k", 5)
    depth = common.pick(args.depth, file, "depth", max(k, 20) if rerankers else k)
    batch_size = common.pick(args.batch_size, file, "batch_size", 8)
    max_examples = common.pick(args.max_examples, file, "max_examples")
    common.positive_ints({"k": k, "depth": depth, "batch_size": batch_size, "max_examples": max_examples},
                         "k", "depth", "batch_size", "max_examples")

    no_retrieval = isinstance(retriever, str) and retriever.strip().lower() == "none"
    *stages, generator_spec = common.with_llm_options(
        [*([] if no_retrieval else [retriever]), *rerankers, generator_spec], common.llm_options(args, file)
    )

    with common.claimed_output_dir(common.pick(args.output_dir, file, "output_dir")) as out:
        generator = build_generator(
            generator_spec, task,
            max_prompt_tokens=common.pick(args.max_prompt_tokens, file, "max_prompt_tokens"),
            max_new_tokens=common.pick(args.max_new_tokens, file, "max_new_tokens"),
            answer_mode=common.pick(args.answer_mode, file, "answer_mode"),
        )
        pipeline = Pipeline([*stages, generator], k=depth, context_k=k)
        check_pipeline(pipeline)  # model paths, before the data is read

        if questions:
            dataset = load_lamp(task, questions, outputs)
            source = {"questions": str(Path(questions).resolve()), "outputs": str(Path(outputs).resolve()) if outputs else None}
        else:
            dataset = load_lamp_split(task, split, split_kind, cache_dir=common.pick(args.cache_dir, file, "cache_dir"))
            source = {"split": split, "split_kind": split_kind}
        users = dataset.users  # similar users come from the whole split, however many examples run
        full = dataset
        if max_examples is not None:
            dataset = dataset.head(max_examples)
        run_config = {
            **source,
            "retriever": "none" if no_retrieval else pipeline.retriever.config(),
            "rerankers": [r.config() for r in pipeline.rerankers],
            "generator": generator.config(),
            "k": k,
            "depth": depth,
            "max_examples": max_examples,
            "batch_size": batch_size,
        }
        result = run_lamp(dataset, pipeline, out, run_config=run_config, batch_size=batch_size, overwrite=args.overwrite,
                          users=users, full=full, sources=source, engine=common.engine_settings(args))

    sys.stdout.write(f"{task}: {result.examples} examples ({result.generated} generated now), run {result.run_name}\n")
    for key, value in result.metrics.items():
        sys.stdout.write(f"  {key:<12} {value:.4f}\n")
    written = ["predictions.jsonl", "retrieved.jsonl", *(["metrics.json"] if result.metrics else []), "stats.json", "config.json"]
    if not result.metrics:
        sys.stdout.write("no gold outputs (give --outputs FILE), so no metrics were computed\n")
    sys.stdout.write(f"wrote {result.output_dir}/{', '.join(written)}\n")
    return 0
