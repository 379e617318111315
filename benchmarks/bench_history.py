"""User-history BM25 over every example of the LaMP dev splits: personarag's one-index
`history:bm25` against the reference code's loop, which builds a fresh
`rank_bm25.BM25Okapi(profile)` for each example.

Both see the same strings (the loader's query text and each item's `full_text`) and the
same tokenizer (`str.split`). Three runs of ours over all examples:
- `cold`: a fresh retriever, nothing cached: every item tokenized, every history indexed;
- `tokens`: a fresh retriever over a token cache that already holds the items' bags of words,
  as a user store keeps them after import: every history still indexed (postings, idf,
  epsilon floor), every query tokenized;
- `postings`: a fresh retriever over a cache that also holds each user's postings (derived
  data a store keeps per user until the history changes): histories found unchanged are
  not re-indexed, every query is still tokenized and scored.
- `store`: what a fresh process does on a warm user store: open the `UserStore` (SQLite file
  holding the split's users), a new `HistoryRetriever("bm25", store=...)` (new token cache)
  reads the vocabulary and every user's postings in bulk and scores; nothing is tokenized
  but the queries, nothing indexed;
- `store-cold`: the first such retriever on a freshly imported store (no BM25 data yet): it
  tokenizes every item, indexes every history and writes the bags and postings to the store.
Each timing is the best of `--repeat` runs; the script checks that the top-k ids of all
runs agree with the reference on every example and prints wall times and the speed-ups in
wall and CPU time (CPU time is steadier on a shared, loaded machine).

    .venv/bin/python benchmarks/bench_history.py [--k 5] [--repeat 3] [--data ../shared/data/lamp]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from rank_bm25 import BM25Okapi

from personarag.personal.history import HistoryRetriever
from personarag.personal.store import UserStore
from personarag.personal.tokens import TokenCache
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


def timed(run, repeat: int, setup=None):
    """(result of the last run, best wall seconds, best CPU seconds); `setup` runs untimed before each."""
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        if setup is not None:
            setup()
        start, cpu = time.perf_counter(), time.process_time()
        result = run()
        best_wall = min(best_wall, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return result, best_wall, best_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    shared = Path(os.environ.get("PERSONARAG_SHARED_DATA", ROOT.parent / "shared" / "data"))
    parser.add_argument("--data", type=Path, default=shared / "lamp", help="LaMP splits ($PERSONARAG_SHARED_DATA/lamp)")
    args = parser.parse_args()
    folders = sorted(p for p in args.data.glob("LaMP_*") if (p / "dev_questions.json").is_file())
    if not folders:
        raise SystemExit(f"no LaMP dev splits under {args.data} (pass --data)")
    print(f"{'split':<22} {'examples':>8} {'users':>5} {'items/ex':>8} {'reference s':>11} {'cold s':>7} "
          f"{'tokens s':>8} {'postings s':>10} {'store-cold s':>12} {'store s':>7} {'cold x':>7} {'tokens x':>8} "
          f"{'postings x':>10} {'store-cold x':>12} {'store x':>7} {'cpu: cold x':>11} {'tokens x':>8} "
          f"{'postings x':>10} {'store-cold x':>12} {'store x':>7} {'same top-k':>11}")
    for folder in folders:
        queries = load_queries(folder)
        expected, ref_s, ref_cpu = timed(lambda: reference(queries, args.k), args.repeat)
        cold, cold_s, cold_cpu = timed(lambda: HistoryRetriever("bm25").retrieve(queries, k=args.k), args.repeat)
        cache = TokenCache(str.split, "split")
        cache.bags_of([d for q in queries for d in q.user.history])  # what a store holds after import

        def over_token_cache() -> list:
            cache.postings.clear()
            return HistoryRetriever("bm25", tokens=cache).retrieve(queries, k=args.k)

        warm, warm_s, warm_cpu = timed(over_token_cache, args.repeat)  # leaves the postings in the cache
        kept, kept_s, kept_cpu = timed(
            lambda: HistoryRetriever("bm25", tokens=cache).retrieve(queries, k=args.k), args.repeat
        )
        with tempfile.TemporaryDirectory() as tmp:
            imported, path = Path(tmp) / "imported.db", Path(tmp) / "users.db"
            with UserStore(imported) as store:  # the split's users, as `personarag store import` leaves them
                store.add_users({q.user.id: q.user for q in queries}.values())

            def fresh_copy() -> None:
                for suffix in ("-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
                shutil.copyfile(imported, path)

            def on_store() -> list:
                with UserStore(path) as store:  # opened as a fresh process would
                    return HistoryRetriever("bm25", store=store).retrieve(queries, k=args.k)

            first, first_s, first_cpu = timed(on_store, args.repeat, setup=fresh_copy)  # leaves a warm store
            stored, store_s, store_cpu = timed(on_store, args.repeat)
        same = sum(all(run.ids == e for run in runs)
                   for *runs, e in zip(cold, warm, kept, first, stored, expected))
        items = sum(len(q.user.history) for q in queries) / len(queries)
        users = len({q.user.id for q in queries})
        walls = [cold_s, warm_s, kept_s, first_s, store_s]
        cpus = [cold_cpu, warm_cpu, kept_cpu, first_cpu, store_cpu]
        widths = [7, 8, 10, 12, 7]
        print(f"{folder.name:<22} {len(queries):>8} {users:>5} {items:>8.1f} {ref_s:>11.3f} "
              + " ".join(f"{t:>{w}.3f}" for t, w in zip(walls, widths)) + " "
              + " ".join(f"{ref_s / t:>{w - 1}.1f}x" for t, w in zip(walls, widths)) + " "
              + " ".join(f"{ref_cpu / t:>{w - 1}.1f}x" for t, w in zip(cpus, [11, 8, 10, 12, 7]))
              + f" {same:>6}/{len(queries):<4}", flush=True)


if __name__ == "__main__":
    main()
