"""Similar-user search over synthetic user embeddings through
`personarag.personal.user_index.UserIndex` (what the collaborative retriever and the user store use).

Users: clustered gaussians (seeded), unit-normalised; `--noise` is the within-cluster spread
(centres have unit variance per dimension): at 1.5 a user's 10 nearest users are obviously its
cluster mates; at 2.0-2.5 the within-cluster cosine (about 1/(1+noise^2)) sinks towards the best
chance match among 1,000,000 users, so the exact neighbours are no longer obvious. Queries: users
of the same set, each excluding itself. Recall@10 is against exact search on the same data.

For each noise level: build time (--threads), index memory (the serialised FAISS index and the
growth of this process's resident memory during the build), ms/query on ONE thread one query
at a time and in one batch, recall@10, for UserIndex's defaults (marked *) and a sweep of nprobe
(or efSearch); then an upsert of --changed users moved to other clusters: its time, and recall
against exact search on the changed data.

    .venv/bin/python benchmarks/bench_user_search.py [--users 1000000] [--noise 1.5 2.0 2.5] [--queries 1000]
        [--threads 2] [--changed 10000] [--kinds auto,hnsw]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from personarag.personal.user_index import UserIndex


def clustered_users(n: int, dim: int, clusters: int, seed: int, noise: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """(unit vectors, cluster of each)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim), dtype=np.float32)
    labels = rng.integers(clusters, size=n)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):  # in chunks: no float64 copy of the whole matrix
        stop = min(n, start + 100_000)
        chunk = centers[labels[start:stop]] + noise * rng.standard_normal((stop - start, dim), dtype=np.float32)
        out[start:stop] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return out, labels


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def index_mb(index: UserIndex) -> float:
    import faiss

    if index.built_kind == "ivf-pq":  # the codes plus the float vectors it re-scores with
        return (faiss.serialize_index(index.index.index).nbytes + index.index.rows * index.dim * 4) / 2**20
    return faiss.serialize_index(index.index).nbytes / 2**20


def recall(found: list[list[tuple[str, float]]], exact: list[list[tuple[str, float]]]) -> float:
    hits = [len({u for u, _ in f} & {u for u, _ in e}) / max(1, len(e)) for f, e in zip(found, exact)]
    return float(np.mean(hits))


def timed_search(index: UserIndex, queries: np.ndarray, exclude: list[str], m: int, params: dict | None):
    """(ms/query one at a time, ms/query batched, batched results), on one thread."""
    import faiss

    faiss.omp_set_num_threads(1)
    start = time.perf_counter()
    for row, asking in zip(queries, exclude):
        index.search(row[None, :], m, exclude=[asking], params=params)
    single = (time.perf_counter() - start) * 1000 / len(queries)
    start = time.perf_counter()
    found = index.search(queries, m, exclude=exclude, params=params)
    batched = (time.perf_counter() - start) * 1000 / len(queries)
    return single, batched, found


def exact_search(ids: list[str], vectors: np.ndarray, queries: np.ndarray, exclude: list[str], m: int, threads: int):
    import faiss

    faiss.omp_set_num_threads(threads)
    return UserIndex("flat").build(ids, vectors).search(queries, m, exclude=exclude)


def sweep_for(kind: str, index: UserIndex) -> list[dict[str, int]]:
    if index.built_kind == "ivf":
        return [{"nprobe": p} for p in (16, 32, 64, 128, 256)]
    if index.built_kind == "ivf-pq":
        return [{"nprobe": p} for p in (64, 128, 256, 384)]
    if index.built_kind == "hnsw":
        return [{"ef_search": e} for e in (32, 64, 128, 256)]
    return [{}]


def rows_of(index: UserIndex) -> int:
    """Rows the index holds, dead ones (HNSW, IVF-PQ) included."""
    return index.index.rows if index.built_kind == "ivf-pq" else index.index.ntotal


def run_noise(args: argparse.Namespace, noise: float) -> None:
    import faiss

    vectors, labels = clustered_users(args.users, args.dim, args.clusters, args.seed, noise)
    ids = [f"u{i}" for i in range(args.users)]
    rng = np.random.default_rng(args.seed + 1)
    asking = rng.choice(args.users, size=args.queries, replace=False)
    queries, exclude = vectors[asking], [ids[i] for i in asking]
    start = time.perf_counter()
    exact = exact_search(ids, vectors, queries, exclude, args.m, args.threads)
    exact_s = time.perf_counter() - start
    mates = np.mean([labels[int(u[1:])] == labels[q] for row, q in zip(exact, asking) for u, _ in row])
    print(f"\n### noise {noise}: {args.users:,} users, {args.dim}-d, {args.clusters} clusters, {args.queries} queries, "
          f"m={args.m}; build on {args.threads} threads, search on 1 thread (exact ground truth: {exact_s:.1f} s); "
          f"{mates:.1%} of the exact top-{args.m} are the asking user's cluster mates\n")
    print("| index | setting | build s | index MB | RSS growth MB | ms/query single | ms/query batched | recall@10 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    defaults = UserIndex()
    indexes: dict[str, UserIndex] = {}
    for kind in args.kinds:
        faiss.omp_set_num_threads(args.threads)
        before = rss_mb()
        start = time.perf_counter()
        index = UserIndex(kind, seed=args.seed).build(ids, vectors)
        build_s = time.perf_counter() - start
        grown = rss_mb() - before
        indexes[kind] = index
        for knobs in sweep_for(kind, index):
            single, batched, found = timed_search(index, queries, exclude, args.m, knobs or None)
            knob_defaults = {"nprobe": defaults.refine["pq_nprobe"]} if index.built_kind == "ivf-pq" else defaults.options
            default = all(knob_defaults[k] == v for k, v in knobs.items()) and kind in ("auto", defaults._choose_kind(args.users))
            name = (f"{kind} ({index.built_kind}, nlist={index.nlist_used})" if index.built_kind in ("ivf", "ivf-pq")
                    else f"{kind} ({index.built_kind})")
            setting = ", ".join(f"{k}={v}" for k, v in knobs.items()) or "exact"
            print(f"| {name}{' *' if default else ''} | {setting} | {build_s:.1f} | {index_mb(index):.0f} | {grown:.0f} "
                  f"| {single:.3f} | {batched:.3f} | {recall(found, exact):.3f} |", flush=True)
    if not args.changed:
        return
    moved = rng.choice(args.users, size=args.changed, replace=False)
    new, _ = clustered_users(args.changed, args.dim, args.clusters, args.seed + 2, noise)
    vectors[moved] = new
    changed_ids = [ids[i] for i in moved]
    exact_after = exact_search(ids, vectors, queries, exclude, args.m, args.threads)
    moved_set = set(moved.tolist())
    touched = [n for n, i in enumerate(asking) if i in moved_set]
    print(f"\nUpsert of {args.changed:,} changed users (moved to another cluster), on {args.threads} threads; recall@10 "
          f"against exact search on the changed data ({len(touched)} of the queries are moved users, asked with their old vector)\n")
    print("| index | upsert s | users/s | index rows after | recall@10 after | recall@10 before (same queries, old data) |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind, index in indexes.items():
        faiss.omp_set_num_threads(args.threads)
        before_found = index.search(queries, args.m, exclude=exclude)
        start = time.perf_counter()
        index.upsert(changed_ids, new)
        upsert_s = time.perf_counter() - start
        faiss.omp_set_num_threads(1)
        after = index.search(queries, args.m, exclude=exclude)
        print(f"| {kind} ({index.built_kind}) | {upsert_s:.2f} | {args.changed / upsert_s:,.0f} | {rows_of(index):,} "
              f"| {recall(after, exact_after):.3f} | {recall(before_found, exact):.3f} |", flush=True)
    del indexes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--noise", type=float, nargs="+", default=[1.5, 2.0, 2.5],
                        help="within-cluster spread(s); cluster centres have unit variance")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--m", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="threads for building and exact ground truth; search uses 1")
    parser.add_argument("--changed", type=int, default=10_000, help="users moved by one upsert (0: skip)")
    parser.add_argument("--kinds", default="auto", help="comma list of UserIndex kinds; auto is the default; "
                        "hnsw takes about 15 minutes to build at 1,000,000 users on 2 cores")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    for noise in args.noise:
        run_noise(args, noise)


if __name__ == "__main__":
    main()
