"""The user store on the LaMP dev splits: import, re-import (nothing changes), export, reading
every user's history, the embedding cache (384-d float32 per item) and adding 1% new items.

One table per backend: SQLite always (a temp file), PostgreSQL when `--postgres URL` names an
empty database to use (its tables are created; drop the database afterwards).

    .venv/bin/python benchmarks/bench_store_ops.py [--data ../shared/data/lamp] [--postgres postgresql://pg@127.0.0.1:5432/bench]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from personarag.personal.store import UserStore, content_hash
from personarag.types import Document

ROOT = Path(__file__).resolve().parents[1]
DIM = 384


def bench(store: UserStore, questions: Path, scratch: Path) -> dict[str, float]:
    row: dict[str, float] = {}
    t = time.perf_counter()
    report = store.import_lamp(questions, batch_size=64)
    row["import s"] = time.perf_counter() - t
    row["users"], row["items"] = report.users, report.items_added
    t = time.perf_counter()
    again = store.import_lamp(questions, batch_size=64)
    row["re-import s"] = time.perf_counter() - t
    assert again.items_added == again.items_updated == 0
    t = time.perf_counter()
    users = list(store.users())
    row["read all users s"] = time.perf_counter() - t
    ids = [u.id for u in users]
    t = time.perf_counter()
    for user_id in ids[:50]:
        store.user(user_id)
    row["user() ms"] = (time.perf_counter() - t) / min(50, len(ids)) * 1000
    hashes = list({content_hash(d) for u in users for d in u.history})
    vectors = np.random.default_rng(0).standard_normal((len(hashes), DIM)).astype(np.float32)
    t = time.perf_counter()
    store.put_embeddings("bench-model", dict(zip(hashes, vectors)))
    row["put emb s"] = time.perf_counter() - t
    t = time.perf_counter()
    got = store.get_embeddings("bench-model", hashes)
    row["get emb s"] = time.perf_counter() - t
    assert len(got) == len(hashes)
    new = max(1, len(hashes) // 100)
    t = time.perf_counter()
    for i in range(new):
        store.add_items(ids[i % len(ids)], [Document(f"bench-new-{i}", f"a new item number {i}")])
    row["add 1% items s"] = time.perf_counter() - t
    t = time.perf_counter()
    store.export(scratch / "export.jsonl")
    row["export s"] = time.perf_counter() - t
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "lamp")
    parser.add_argument("--postgres", metavar="URL", help="an empty PostgreSQL database to benchmark too")
    args = parser.parse_args()
    splits = sorted(p for p in args.data.glob("LaMP_*/dev_questions.json"))
    if not splits:
        raise SystemExit(f"no LaMP dev splits under {args.data}")
    backends = ["sqlite"] + (["postgresql"] if args.postgres else [])
    for backend in backends:
        rows = []
        with tempfile.TemporaryDirectory() as scratch_dir:
            scratch = Path(scratch_dir)
            for number, questions in enumerate(splits):
                location = str(scratch / f"s{number}.db") if backend == "sqlite" else args.postgres
                with UserStore(location) as store:
                    if backend == "postgresql":
                        for user_id in store.user_ids():  # one database for every split: start empty
                            store.delete_user(user_id)
                    rows.append((questions.parent.name, bench(store, questions, scratch)))
        columns = list(rows[0][1])
        print(f"\n{backend}")
        print("| split | " + " | ".join(columns) + " |")
        print("|---" * (len(columns) + 1) + "|")
        for name, row in rows:
            cells = [f"{int(v)}" if k in ("users", "items") else f"{v:.3f}" for k, v in row.items()]
            print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
