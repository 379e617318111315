"""User-history BM25 over every example of the LaMP dev splits: personarag's one-index
`history:bm25` against the reference code's loop, which builds a fresh
`rank_bm25.BM25Okapi(profile)` for each example.

Both see the same strings (the loader's query text and each item's `full_text`) and the
same tokenizer (`str.split`); the script checks that the top-k ids agree on every example
and prints the wall time of each, the speed-up, the speed-up in CPU time (steadier than wall
time on a shared, loaded machine) and the agreement.

    .venv/bin/python benchmarks/bench_history.py [--k 5] [--data ../shared/data/lamp]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rank_bm25 import BM25Okapi

from personarag.personal.history import HistoryRetriever
from personarag.types import Document, Query, User

ROOT = Path(__file__).resolve().parents[1]


def load_queries(folder: Path) -> list[Query]:
    """The LaMP loader's queries; the raw JSON (text field chosen per task) if it is absent."""
    task = "_".join(folder.name.split("_")[:2])
    try:
        from personarag.evaluation.lamp import load_lamp

        return load_lamp(task, folder / "dev_questions.json").queries
    except ImportError:
        text_field = {"LaMP_2": "description", "LaMP_3": "text", "LaMP_4": "text", "LaMP_5": "abstract"}[task]
        title_field = {"LaMP_4": "title", "LaMP_5": "title"}.get(task)
        queries = []
        for record in json.loads((folder / "dev_questions.json").read_text(encoding="utf-8")):
            history = tuple(
                Document(str(p["id"]), p[text_field], p.get(title_field) if title_field else None, meta=p)
                for p in record["profile"]
            )
            queries.append(Query(str(record["id"]), record["input"], User(str(record.get("user_id")), history)))
        return queries


def reference(queries: list[Query], k: int) -> list[list[str]]:
    out = []
    for query in queries:
        history = list(query.user.history)
        bm25 = BM25Okapi([d.full_text.split() for d in history])
        out.append([d.id for d in bm25.get_top_n(query.text.split(), history, n=k)])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "lamp")
    args = parser.parse_args()
    folders = sorted(p for p in args.data.glob("LaMP_*") if (p / "dev_questions.json").is_file())
    if not folders:
        raise SystemExit(f"no LaMP dev splits under {args.data}")
    print(f"{'split':<24} {'examples':>8} {'users':>6} {'items/ex':>8} {'reference s':>11} {'history s':>9} "
          f"{'speed-up':>8} {'cpu speed-up':>12} {'same top-k':>10}")
    for folder in folders:
        queries = load_queries(folder)
        start, cpu = time.perf_counter(), time.process_time()
        expected = reference(queries, args.k)
        ref_s, ref_cpu = time.perf_counter() - start, time.process_time() - cpu
        start, cpu = time.perf_counter(), time.process_time()
        rankings = HistoryRetriever("bm25").retrieve(queries, k=args.k)  # includes indexing
        ours_s, ours_cpu = time.perf_counter() - start, time.process_time() - cpu
        same = sum(r.ids == e for r, e in zip(rankings, expected))
        items = sum(len(q.user.history) for q in queries) / len(queries)
        users = len({q.user.id for q in queries})
        print(f"{folder.name:<24} {len(queries):>8} {users:>6} {items:>8.1f} {ref_s:>11.3f} {ours_s:>9.3f} "
              f"{ref_s / ours_s:>7.1f}x {ref_cpu / ours_cpu:>11.1f}x {same:>5}/{len(queries):<4}")


if __name__ == "__main__":
    main()
