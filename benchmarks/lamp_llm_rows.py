"""The LLM rows of the LaMP table (benchmarks/lamp_table.py): which rows a task gets, which are
"n/a" there, the seeded subset every LLM cell runs on, and what a finished cell folder holds.

Rows (issue 12 acceptance): retrieval none, recency, history:bm25, history:dense:ENCODER,
collaborative:ENCODER, collaborative with the trained scorer, +summary (the user's stored
summary, then history:bm25 items under the token budget) and +personalized reranker
(history:bm25 top `rerank_depth` reranked by `personal-cross-encoder:PATH`). The scorer and the
reranker rows run only on the task they were trained on; elsewhere the row carries a note.
Label tasks (LaMP-1/2/3) choose by likelihood with contextual calibration; one raw
(uncalibrated) history:bm25 row keeps raw vs calibrated visible. Generation tasks decode greedily.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LABEL_TASKS = ("LaMP-1", "LaMP-2", "LaMP-3")
NO_SCORER = "n/a: no trained scorer for this task"
NO_RERANKER = "n/a: no trained personalized reranker for this task"


@dataclass(frozen=True)
class LlmRow:
    """One LLM row of a task: `retriever` (spec, config dict or None), label choice calibrated or
    raw, the user's summary at the head of the prompt, a reranker spec, or a `note` (not run).
    `user_store`: the retriever searches other users' histories and is bound to the task's user
    store (the whole split's users, item embeddings cached there), not fitted in memory per cell."""

    name: str
    retriever: Any = None
    user_store: bool = False
    calibrated: bool = True
    summary: bool = False
    reranker: str | None = None
    note: str | None = None


def llm_rows(task: str, encoder: str | None, *, scorer: str | None = None, scorer_task: str | None = None,
             reranker: str | None = None, reranker_task: str | None = None) -> list[LlmRow]:
    """The LLM rows of `task` in run order (cheap and central rows first). `encoder`: the sentence
    encoder of the dense and collaborative rows (None: those rows are left out)."""
    label = task in LABEL_TASKS
    rows = [LlmRow("none"), LlmRow("history:bm25", "history:bm25")]
    if label:
        rows.append(LlmRow("history:bm25 raw", "history:bm25", calibrated=False))
    rows.append(LlmRow("recency", "recency"))
    if encoder:
        rows += [LlmRow("history:dense", f"history:dense:{encoder}"),
                 LlmRow("collaborative", f"collaborative:{encoder}", user_store=True)]
        rows.append(LlmRow("collaborative+scorer", {"spec": f"collaborative:{encoder}", "params": {"scorer": scorer}}, user_store=True)
                    if scorer and scorer_task == task else LlmRow("collaborative+scorer", note=NO_SCORER))
    rows.append(LlmRow("+personalized reranker", "history:bm25", reranker=f"personal-cross-encoder:{reranker}")
                if reranker and reranker_task == task else LlmRow("+personalized reranker", note=NO_RERANKER))
    rows.append(LlmRow("+summary", "history:bm25", summary=True))
    return rows


def bound_retriever(retriever: Any, store: str) -> dict:
    """`retriever` (a spec string or config dict) with its users taken from the user store `store`."""
    config = {"spec": retriever, "params": {}} if isinstance(retriever, str) else {**retriever, "params": dict(retriever.get("params") or {})}
    config["params"]["store"] = store
    return config


def subset_indices(size: int, max_examples: int, seed: int) -> list[int]:
    """The positions (sorted) of the seeded subset: the same examples for every cell of a task."""
    return sorted(random.Random(seed).sample(range(size), min(max_examples, size)))


def slug(text: str, limit: int = 120) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[-limit:]


def model_name(spec: str) -> str:
    """A short name of an LLM spec for row labels: the model file or folder name without suffix."""
    tail = spec.rstrip("/").split("/")[-1].split(":")[-1]
    return re.sub(r"\.(gguf|safetensors)$", "", tail)


def usage_totals(folder: Path) -> dict[str, float]:
    """LLM calls and prompt tokens summed over a cell's finished examples (across resumed invocations;
    the runner keeps each example's usage in retrieved.jsonl)."""
    totals = {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cached_calls": 0}
    path = folder / "retrieved.jsonl"
    if not path.is_file():
        return totals
    for line in path.read_text(encoding="utf-8").splitlines():
        usage = (json.loads(line).get("usage") or {}) if line.strip() else {}
        for key in totals:
            totals[key] += usage.get(key, 0)
    return totals


def finished(folder: Path) -> bool:
    """Whether a cell folder holds a scored run (metrics written after the last example)."""
    return (folder / "metrics.json").is_file() and (folder / "per_query.json").is_file()


def _fmt(entry: dict | None) -> str:
    if not entry:
        return "-"
    return f"{entry['value']:.3f}" + (f" ± {entry['se']:.3f}" if entry.get("se") is not None else "")


def llm_markdown(task: str, rows: list[dict], columns: tuple) -> list[str]:
    """The LLM table of one task: per row and model, each column on the subset (± standard error),
    the held-out columns where a trained artifact applies, seconds, LLM calls and prompt tokens."""
    per = [name for name, per_example in columns if per_example]
    names = [name for name, _ in columns]
    extra = [(key, label) for key, label in (("heldout", "not trained on by the scorer"),
                                             ("reranker_heldout", "not trained on by the reranker"))
             if any(r.get(key) for r in rows)]
    head = (["model", "row", "examples"] + names + [f"{n} ({label}, n)" for _, label in extra for n in per[:1]]
            + ["seconds (all invocations)", "LLM calls", "prompt tokens"])
    lines = [f"LLM rows ({task}, the seeded subset):", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r.get("subset") is None:
            cells = [r["model"], r["row"], str(r["examples"])] + [r["note"]] * len(names) + ["" for _ in extra] + ["", "", ""]
        else:
            usage = r.get("usage") or {}
            held = [f"{_fmt((r.get(key) or {}).get(per[0]))} ({((r.get(key) or {}).get(per[0]) or {}).get('n', 0)})"
                    if r.get(key) else "-" for key, _ in extra]
            cells = ([r["model"], r["row"], str(r["examples"])] + [_fmt(r["subset"].get(n)) for n in names] + held
                     + [f"{r['seconds']:.0f}" if r.get("seconds") is not None else "",
                        str(usage.get("calls", "")), str(usage.get("prompt_tokens", ""))])
        lines.append("| " + " | ".join(cells) + " |")
    return lines
