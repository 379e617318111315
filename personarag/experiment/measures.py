"""Measures that know their direction, and the per-system table with a baseline comparison.

`Measure("nDCG@10")` is higher-is-better; `Measure("mae")` and `Measure("rmse")` (LaMP-3)
are lower-is-better. Comparisons against a baseline use a paired two-sided randomisation
test (sign flips of the per-query differences) with a fixed seed, so reruns agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from personarag.errors import InputError
from personarag.evaluation.lamp_metrics import LOWER_IS_BETTER


@dataclass(frozen=True)
class Measure:
    name: str
    higher_is_better: bool = True

    @classmethod
    def of(cls, value: str | Measure) -> Measure:
        if isinstance(value, Measure):
            return value
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"a measure must be a name like 'nDCG@10' or 'mae', got {value!r}")
        name = value.strip()
        return cls(name, higher_is_better=name.lower() not in LOWER_IS_BETTER)

    def better(self, a: float, b: float) -> bool:
        """Whether value `a` is strictly better than `b`."""
        return a > b if self.higher_is_better else a < b

    def __str__(self) -> str:
        return self.name


def as_measures(values: Sequence[str | Measure] | str | Measure) -> list[Measure]:
    if isinstance(values, (str, Measure)):
        values = [values]
    measures = [Measure.of(v) for v in values]
    if not measures:
        raise InputError("no measures given; e.g. ['nDCG@10', 'Recall@100']")
    return measures


def paired_p_value(a: Sequence[float], b: Sequence[float], *, samples: int = 10_000, seed: int = 0) -> float | None:
    """Two-sided p-value of a paired randomisation test on the mean difference; None for < 2 pairs."""
    import numpy as np

    if len(a) != len(b):
        raise InputError(f"paired test needs as many values on each side, got {len(a)} and {len(b)}")
    if len(a) < 2:
        return None
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    observed = abs(diff.mean())
    if observed == 0:
        return 1.0
    signs = np.random.default_rng(seed).choice((-1.0, 1.0), size=(samples, len(diff)))
    extreme = np.count_nonzero(np.abs((signs * diff).mean(axis=1)) >= observed - 1e-12)
    return float((extreme + 1) / (samples + 1))


def compare(
    aggregates: Mapping[str, Mapping[str, float]],
    per_query: Mapping[str, Mapping[str, Mapping[str, float]]],
    measures: Sequence[Measure],
    baseline: str | None,
) -> dict[str, Any]:
    """{system: {measure: {"value", "delta", "p", "better"}}}; deltas and p-values against `baseline`."""
    table: dict[str, Any] = {}
    for system, values in aggregates.items():
        row: dict[str, Any] = {}
        for measure in measures:
            value = values.get(measure.name)
            cell: dict[str, Any] = {"value": value}
            if baseline is not None and system != baseline and value is not None:
                base = aggregates[baseline].get(measure.name)
                if base is not None:
                    cell["delta"] = value - base
                    cell["better"] = measure.better(value, base)
                    ids = [q for q in per_query.get(baseline, {}) if measure.name in per_query[baseline][q]]
                    mine = per_query.get(system, {})
                    if ids and all(measure.name in mine.get(q, {}) for q in ids):
                        cell["p"] = paired_p_value([mine[q][measure.name] for q in ids],
                                                   [per_query[baseline][q][measure.name] for q in ids])
            row[measure.name] = cell
        table[system] = row
    return table


def format_table(table: Mapping[str, Mapping[str, Mapping[str, Any]]], measures: Sequence[Measure], baseline: str | None) -> str:
    """Systems as rows, measures as columns; `*` marks p < 0.05 against the baseline; arrows give direction."""
    width = max([len("system"), *(len(s) for s in table)])
    heads = [f"{m.name}{'↑' if m.higher_is_better else '↓'}" for m in measures]
    lines = ["system".ljust(width) + "".join(f"  {h:>14}" for h in heads)]
    for system, row in table.items():
        cells = []
        for measure in measures:
            cell = row.get(measure.name, {})
            value = cell.get("value")
            text = "-" if value is None else f"{value:.4f}"
            if "delta" in cell:
                text += f" ({cell['delta']:+.3f}{'*' if (cell.get('p') or 1) < 0.05 else ''})"
            cells.append(f"  {text:>14}")
        mark = " (baseline)" if system == baseline else ""
        lines.append(system.ljust(width) + "".join(cells) + mark)
    return "\n".join(lines)


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of a paired t-test (as scipy.stats.ttest_rel and pyterrier's default);
    None for < 2 pairs; 1.0 when every difference is 0, NaN-free."""
    import numpy as np

    from personarag.errors import require

    if len(a) != len(b):
        raise InputError(f"paired test needs as many values on each side, got {len(a)} and {len(b)}")
    if len(a) < 2:
        return None
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    spread = diff.std(ddof=1)
    if spread == 0:
        return 1.0 if diff.mean() == 0 else 0.0
    t = diff.mean() / (spread / np.sqrt(len(diff)))
    special = require("scipy.special", "report", purpose="the t distribution of the paired t-test")
    return float(2 * special.stdtr(len(diff) - 1, -abs(t)))


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); None stays None.
    The family is the non-None values: the systems compared with one baseline on one measure."""
    present = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    adjusted: list[float | None] = [None] * len(p_values)
    running, m = 0.0, len(present)
    for rank, (p, index) in enumerate(present):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[index] = running
    return adjusted
