"""Raw vs calibrated label choice on LaMP-2 and LaMP-3 dev: does contextual calibration or
length normalisation move a small LLM off its label prior?

    PYTHONPATH=. .venv/bin/python benchmarks/lamp_calibration.py [--model SPEC] [--max-examples 40] \
        [--seed 0] [--k 3] [--out benchmarks/results/lamp_calibration.md]

For each task, a fixed subset of --max-examples dev examples drawn with --seed (the same draw as
`benchmarks/lamp_table.py`), with no retrieval and with `history:bm25` (top --k profile items),
the LaMP generator in answer_mode="choose" under four settings: raw (summed log-probability),
length-normalised, calibrated (content-free prior, --content-free fillers) and calibrated +
length-normalised. The four settings read the same `LLM.score` results (the LLM cache serves the
repeats), so a rerun, or a setting added later, costs only the prompts not yet scored.
Per row: accuracy (LaMP-2) or MAE (LaMP-3) with its standard error (sample standard deviation
over sqrt(n)), and the answer distribution: the most frequent answer and its share. The floors
`majority` and `user-majority` (no LLM) are printed on the same examples for reference.

`--summary-store PATH` adds rows with the user's summary at the head of the prompt (alone, and
with the `history:bm25` items): the subset's users are put in that user store, and
`summarize_users` writes their task summaries with the same model (a rerun rewrites none).
`--summary-stats`: "off" keeps the model's text alone ("summary" rows), "on" begins it with the
exact counts of the user's labels ("summary+stats" rows, in PATH with "-stats" before the suffix),
"both" (default) does both.
"""

from __future__ import annotations

import argparse
import collections
import logging
import math
import os
import random
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from llm_choice import add_model_arguments, load_model  # noqa: E402

TASK_DIRS = {"LaMP_2": "LaMP-2", "LaMP_3": "LaMP-3"}
SETTINGS = (("raw", "none", False), ("length-norm", "none", True),
            ("calibrated", "content-free", False), ("calibrated+length-norm", "content-free", True))


def standard_error(values: list[float]) -> float:
    n = len(values)
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else float("nan")


def per_example(task: str, answer: str, gold: str) -> float:
    """LaMP-2: 1 when right; LaMP-3: the absolute rating error."""
    return float(answer == gold) if task == "LaMP-2" else abs(float(answer) - float(gold))


def row(task: str, name: str, answers: list[str], golds: list[str], seconds: float | None) -> dict:
    values = [per_example(task, a, g) for a, g in zip(answers, golds)]
    top, count = collections.Counter(answers).most_common(1)[0]
    return {"task": task, "row": name, "n": len(values), "value": sum(values) / len(values), "se": standard_error(values),
            "top": top, "top_share": count / len(answers), "distinct": len(set(answers)), "seconds": seconds}


def markdown(rows: list[dict]) -> str:
    lines = []
    for task in dict.fromkeys(r["task"] for r in rows):
        metric = "accuracy" if task == "LaMP-2" else "MAE"
        lines += [f"### {task}", "", f"| row | n | {metric} ± se | most frequent answer (share) | distinct answers | seconds |",
                  "|---|---|---|---|---|---|"]
        for r in (r for r in rows if r["task"] == task):
            seconds = "" if r["seconds"] is None else f"{r['seconds']:.0f}"
            lines.append(f"| {r['row']} | {r['n']} | {r['value']:.3f} ± {r['se']:.3f} | {r['top']!r} ({r['top_share']:.2f}) "
                         f"| {r['distinct']} | {seconds} |")
        lines.append("")
    return "\n".join(lines)


def summaries_for(args, llm, task: str, queries, stats: bool) -> object:
    """The user store of the summary rows, holding the queries' users and their `task` summaries."""
    from personarag.personal.store import UserStore
    from personarag.personal.summaries import summarize_users

    path = Path(args.summary_store)
    store = UserStore(path.with_name(f"{path.stem}-stats{path.suffix}") if stats else path)
    store.add_users([q.user for q in queries])
    started = time.perf_counter()
    report = summarize_users(store, llm, task, user_ids=[q.user.id for q in queries], progress=True,
                             max_prompt_tokens=args.summary_prompt_tokens, label_stats=stats)
    print(f"{task} summaries: {report.written} written, {report.up_to_date} up to date ({time.perf_counter() - started:.0f} s)", flush=True)
    return store


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_data = next((p for p in (REPO.parent / "shared" / "data" / "lamp", REPO.parent.parent / "shared" / "data" / "lamp")
                         if p.is_dir()), REPO.parent / "shared" / "data" / "lamp")
    parser.add_argument("--data-dir", default=str(default_data))
    parser.add_argument("--tasks", nargs="*", default=["LaMP_2", "LaMP_3"])
    parser.add_argument("--retrievers", nargs="*", default=["none", "history:bm25"])
    parser.add_argument("--max-examples", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=3, help="profile items retrieved into the prompt")
    parser.add_argument("--max-prompt-tokens", type=int, default=512)
    parser.add_argument("--content-free", nargs="*", default=["N/A", "", "[MASK]"], help="content-free fillers (averaged)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "personarag" / "llm"),
                        help="the LLM cache (a rerun is served from it)")
    parser.add_argument("--summary-store", help="a user store for the summary rows (created when missing)")
    parser.add_argument("--summary-prompt-tokens", type=int, default=768, help="budget of a summary prompt")
    parser.add_argument("--summary-tokens", type=int, default=96, help="a summary's share of the LaMP prompt")
    parser.add_argument("--summary-stats", choices=("off", "on", "both"), default="both",
                        help="begin summaries with exact label counts (on), not (off), or rows of both")
    parser.add_argument("--out", help="write the command, the machine load and the table here (markdown)")
    add_model_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import torch

    torch.set_num_threads(args.threads)
    from personarag import registry
    from personarag.evaluation.lamp import load_lamp
    from personarag.generators.lamp import LaMPGenerator
    from personarag.pipeline import Pipeline

    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        print(f"no LaMP data at {data_dir}: nothing to do")
        return 0
    load_before = os.getloadavg()
    llm = load_model(args, threads=args.threads, cache_dir=args.cache_dir)
    rows: list[dict] = []
    for wanted in args.tasks:
        folders = sorted(p for p in data_dir.iterdir() if p.name.startswith(wanted) and (p / "dev_questions.json").is_file())
        if not folders:
            print(f"{wanted}: no dev split under {data_dir}: skipped")
            continue
        task = TASK_DIRS[wanted]
        full = load_lamp(task, folders[0] / "dev_questions.json", folders[0] / "dev_outputs.json")
        chosen = sorted(random.Random(args.seed).sample(range(len(full)), min(args.max_examples, len(full))))
        examples = [full.examples[i] for i in chosen]
        queries, golds = [e.query for e in examples], [str(e.gold) for e in examples]
        for floor in ("majority", "user-majority"):
            generator = registry.build(floor, task=task).fit_users(full.users)
            answers = [o.text for o in Pipeline([generator]).run(queries)]
            rows.append(row(task, f"floor: {floor}", answers, golds, None))
        cells = [(retriever, {}) for retriever in args.retrievers]
        for stats in ((False, True) if args.summary_stats == "both" else (args.summary_stats == "on",)) if args.summary_store else ():
            store = summaries_for(args, llm, task, queries, stats)
            name = "summary+stats" if stats else "summary"
            options = {"summary": True, "store": store, "summary_tokens": args.summary_tokens}
            cells += [(name, options), (f"{name}+history:bm25", options)]
        for retriever, extra in cells:
            for name, calibration, length_norm in SETTINGS:
                generator = LaMPGenerator(llm, task=task, answer_mode="choose", calibration=calibration, length_norm=length_norm,
                                          content_free=args.content_free, max_prompt_tokens=args.max_prompt_tokens, batch_size=4,
                                          **extra)
                first = retriever.split("+")[-1]
                stages = ([] if first in ("none", "summary", "stats") else [first]) + [generator]
                started = time.perf_counter()
                outputs = Pipeline(stages, k=args.k, context_k=args.k).run(queries)
                seconds = time.perf_counter() - started
                rows.append(row(task, f"{retriever} {name}", [o.text for o in outputs], golds, seconds))
                print(f"{task} {retriever} {name}: {rows[-1]['value']:.3f} ± {rows[-1]['se']:.3f}, "
                      f"top {rows[-1]['top']!r} {rows[-1]['top_share']:.2f} ({seconds:.0f} s)", flush=True)
    load_after = os.getloadavg()
    command = "PYTHONPATH=. python benchmarks/lamp_calibration.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    header = (f"Model: {llm.model_name}. LaMP dev, {args.max_examples} examples per task drawn with seed {args.seed}; "
              f"history:bm25 puts the top {args.k} profile items in a {args.max_prompt_tokens}-token prompt; "
              f"content-free fillers {args.content_free} (averaged). value ± standard error. "
              f"Seconds: wall time of this invocation (0 when served from the LLM cache). "
              f"Load average (1 min) before {load_before[0]:.1f}, after {load_after[0]:.1f}; torch threads {args.threads}.\n\n")
    table = markdown(rows)
    print("\n" + header + table)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(f"# Raw vs calibrated label choice\n\nCommand: `{command}`\n\n" + header + table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
