"""One comparison table over several systems: quality, cost, parse fallbacks, significance; and its plot.

`comparison_table(...)` builds rows from the systems' metrics and per-query records
(rankings.jsonl: usage, traces, seconds) plus published reference rows; each run system
other than the baseline gets, per measure and per test (`t`: paired t-test, pyterrier's
default; `randomisation`: paired sign-flip test), a two-sided p-value against the baseline
over the same judged queries and its Holm-corrected value (the family: all systems compared
with the baseline on that measure, as pyterrier's `Experiment(correction="holm")`).
`to_markdown` / `to_json` render it; `plot_quality_cost` writes a PNG of the first measure
against LLM tokens (or seconds) per query, published rows marked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from personarag.errors import InputError, require
from personarag.experiment.measures import Measure, holm, paired_p_value, paired_t_test

TESTS = {"t": paired_t_test, "randomisation": paired_p_value}
COST_COLUMNS = (
    ("calls", "LLM calls/q"), ("prompt_tokens", "prompt tok/q"), ("completion_tokens", "compl. tok/q"),
    ("seconds", "s/q"), ("problems", "fallbacks"),
)


def costs(records: Mapping[str, Mapping[str, Any]], query_ids: Sequence[str]) -> dict[str, Any]:
    """Per-query means of LLM calls, tokens and seconds (wall time of the rerankers, or the LLM's
    where no wall time was recorded), and the parse problems on the traces, over `query_ids`."""
    totals = {"calls": 0.0, "prompt_tokens": 0.0, "completion_tokens": 0.0, "seconds": 0.0, "llm_seconds": 0.0,
              "cached_calls": 0.0}
    problems = queries_with_problems = found = 0
    for query_id in query_ids:
        record = records.get(query_id)
        if record is None:
            continue
        found += 1
        usage = record.get("usage") or {}
        for key in ("calls", "prompt_tokens", "completion_tokens", "cached_calls"):
            totals[key] += float(usage.get(key, 0) or 0)
        totals["llm_seconds"] += float(usage.get("seconds", 0.0) or 0.0)
        totals["seconds"] += float(record.get("seconds", usage.get("seconds", 0.0)) or 0.0)
        count = sum(len(t.get("problems") or ()) for t in record.get("trace") or ())
        problems += count
        queries_with_problems += bool(count)
    out: dict[str, Any] = {key: (value / found if found else None) for key, value in totals.items()}
    out.update(problems=problems, queries_with_problems=queries_with_problems, queries=found)
    return out


def comparison_table(
    names: Sequence[str],
    metrics: Mapping[str, Mapping[str, float]],
    per_query: Mapping[str, Mapping[str, Mapping[str, float]]],
    records: Mapping[str, Mapping[str, Mapping[str, Any]]],
    measures: Sequence[Measure],
    *,
    baseline: str | None,
    tests: Sequence[str] = ("t",),
    correction: str | None = "holm",
    published: Sequence[Mapping[str, Any]] = (),
    query_ids: Sequence[str] = (),
) -> dict[str, Any]:
    """{"baseline", "tests", "correction", "measures", "rows": [{"system", "kind", "metrics", "costs", "tests"}]}."""
    unknown = [t for t in tests if t not in TESTS]
    if unknown:
        raise InputError(f"unknown significance tests {unknown}; choose from {sorted(TESTS)}")
    if correction not in (None, "holm"):
        raise InputError(f"correction must be 'holm' or none, got {correction!r}")
    if baseline is not None and baseline not in names:
        raise InputError(f"baseline {baseline!r} is not one of the run systems {list(names)}")
    rows: list[dict[str, Any]] = []
    for name in names:
        rows.append({"system": name, "kind": "run", "metrics": {m.name: metrics[name].get(m.name) for m in measures},
                     "costs": costs(records.get(name, {}), query_ids), "tests": {}})
    others = [row for row in rows if row["system"] != baseline]
    if baseline is not None:
        base = per_query[baseline]
        for measure in measures:
            ids = [q for q in base if measure.name in base[q]]
            for test in tests:
                raw = []
                for row in others:
                    mine = per_query.get(row["system"], {})
                    if ids and all(measure.name in mine.get(q, {}) for q in ids):
                        raw.append(TESTS[test]([mine[q][measure.name] for q in ids], [base[q][measure.name] for q in ids]))
                    else:
                        raw.append(None)
                adjusted = holm(raw) if correction == "holm" else raw
                for row, p, p_adj in zip(others, raw, adjusted):
                    value, base_value = row["metrics"].get(measure.name), metrics[baseline].get(measure.name)
                    row["tests"].setdefault(measure.name, {"delta": None if value is None or base_value is None
                                                           else value - base_value})
                    row["tests"][measure.name][test] = {"p": p, "p_corrected": p_adj}
    for entry in published:
        rows.append(_published_row(entry, measures))
    return {"baseline": baseline, "tests": list(tests), "correction": correction,
            "measures": [m.name for m in measures], "queries": len(query_ids), "rows": rows}


def _published_row(entry: Mapping[str, Any], measures: Sequence[Measure]) -> dict[str, Any]:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
        raise InputError(f"a published row needs a 'name' and measure values, got {entry!r}")
    values = {}
    for measure in measures:
        value = entry.get(measure.name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise InputError(f"published row {entry['name']!r}: {measure.name} must be a number, got {value!r}")
        values[measure.name] = None if value is None else float(value)
    row_costs = {key: entry.get(key) for key in ("calls", "prompt_tokens", "completion_tokens", "seconds")}
    return {"system": entry["name"], "kind": "published", "metrics": values, "costs": row_costs, "tests": {},
            "source": entry.get("source")}


def _marker(row: Mapping[str, Any], measure: str, test: str | None) -> str:
    cell = row["tests"].get(measure)
    if not cell or test is None or test not in cell:
        return ""
    p = cell[test]["p_corrected"]
    delta = cell["delta"]
    text = "" if delta is None else f" ({delta:+.4f}"
    if p is not None and p < 0.05:
        text += "*"
    return text + (")" if text else "")


def to_markdown(table: Mapping[str, Any], title: str = "") -> str:
    measures = table["measures"]
    test = table["tests"][0] if table["tests"] else None
    head = ["system", *measures, *(label for _, label in COST_COLUMNS)]
    lines = [f"## {title}", ""] if title else []
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table["rows"]:
        name = row["system"] + (" (baseline)" if row["system"] == table["baseline"] else "")
        name += " (published, not run)" if row["kind"] == "published" else ""
        cells = [name]
        for measure in measures:
            value = row["metrics"].get(measure)
            cells.append("-" if value is None else f"{value:.4f}{_marker(row, measure, test)}")
        for key, _ in COST_COLUMNS:
            value = row["costs"].get(key)
            if key == "problems" and row["kind"] == "run":
                cells.append(f"{value} ({row['costs']['queries_with_problems']} q)")
            elif key == "calls" and row["costs"].get("cached_calls"):
                cells.append(f"{_format_cost(key, value)} (+{row['costs']['cached_calls']:.1f} cached)")
            else:
                cells.append(_format_cost(key, value))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if test is not None and table["baseline"] is not None:
        which = {"t": "paired t-test", "randomisation": "paired randomisation test"}[test]
        corrected = ", Holm-corrected across systems" if table["correction"] == "holm" else ""
        lines.append(f"({delta_note(table['baseline'])}; * p < 0.05, {which}{corrected}, over {table['queries']} queries. "
                     "Costs are means per query (calls answered from the LLM cache cost no tokens and are shown apart); "
                     "fallbacks: problems recorded on the traces (answers not read). "
                     "Published rows are reported numbers, not run here.)")
    return "\n".join(lines) + "\n"


def _format_cost(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "seconds":
        return f"{float(value):.3f}"
    if key == "calls":
        return f"{float(value):.1f}"
    return f"{float(value):,.0f}" if key.endswith("tokens") else str(value)


def delta_note(baseline: str) -> str:
    return f"differences against {baseline}"


def plot_quality_cost(table: Mapping[str, Any], path: str | Path, *, cost: str = "tokens", title: str = "") -> Path:
    """nDCG (the first measure) against LLM tokens (prompt + completion) or seconds per query."""
    if cost not in ("tokens", "seconds"):
        raise InputError(f"cost must be 'tokens' or 'seconds', got {cost!r}")
    matplotlib = require("matplotlib", "report", purpose="the quality-vs-cost plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measure = table["measures"][0]
    figure, axes = plt.subplots(figsize=(10, 5.6))
    lines, points, xs = 0, 0, [1.0]
    for row in table["rows"]:
        y = row["metrics"].get(measure)
        if y is None:
            continue
        x = _cost(row["costs"], cost)
        published = row["kind"] == "published"
        label = f"{row['system']}{' (published)' if published else ''} {y:.4f}"
        if x is None:  # a number without its cost (a published one): a reference line, named in the legend
            style = _LINES[lines % len(_LINES)]
            axes.axhline(y, linestyle=style, linewidth=0.9, color=f"C{lines % 10}", alpha=0.7, label=label)
            lines += 1
            continue
        xs.append(x)
        # a legend entry per row, not a label beside the point: LLM rows share a cost and a quality
        # (all near BM25 at ~3,000 tokens) and their labels would print on top of each other
        color, marker = f"C{points % 10}", _MARKERS[points // 10 % len(_MARKERS)]
        axes.scatter([x], [y], marker="s" if published else marker, facecolors="none" if published else color,
                     edgecolors="black" if published else color, zorder=3, label=label)
        points += 1
    axes.set_xscale("symlog", linthresh=1.0)
    axes.set_xlim(-0.3, max(xs) * 3)
    if lines or points:
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    axes.set_xlabel("LLM tokens per query (prompt + completion)" if cost == "tokens" else "seconds per query")
    axes.set_ylabel(measure)
    axes.set_title(title or f"{measure} vs cost")
    axes.grid(True, linewidth=0.3)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


_LINES = ("--", ":", "-.", (0, (5, 1)), (0, (1, 3)))
_MARKERS = ("o", "^", "D", "v", "P", "X")


def _cost(row_costs: Mapping[str, Any], cost: str) -> float | None:
    if cost == "seconds":
        value = row_costs.get("seconds")
        return None if value is None else float(value)
    prompt, completion = row_costs.get("prompt_tokens"), row_costs.get("completion_tokens")
    if prompt is None and completion is None:
        return None
    total = float(prompt or 0) + float(completion or 0)
    return total if math.isfinite(total) else None
