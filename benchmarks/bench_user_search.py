"""Similar-user search over synthetic user embeddings: exact (flat), IVF and HNSW through
`personarag.personal.user_index.UserIndex` (what the collaborative retriever uses).

Users: clustered gaussians (seeded), unit-normalised; queries: users of the same set,
each excluding itself. Prints build time, ms/query (batched search), index memory
(the serialised FAISS index) and recall@10 against exact search, for a sweep of
nprobe / efSearch; the row marked * is UserIndex's default.

    .venv/bin/python benchmarks/bench_user_search.py [--users 100000] [--dim 384] [--queries 1000] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from personarag.personal.user_index import UserIndex


def clustered_users(n: int, dim: int, clusters: int, seed: int, noise: float = 1.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim)).astype(np.float32)
    labels = rng.integers(clusters, size=n)
    vectors = centers[labels] + noise * rng.normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def index_bytes(index: UserIndex) -> int:
    import faiss

    return int(faiss.serialize_index(index.index.index).nbytes)  # type: ignore[union-attr]


def recall(found: list[list[tuple[str, float]]], exact: list[list[tuple[str, float]]]) -> float:
    hits = [len({u for u, _ in f} & {u for u, _ in e}) / max(1, len(e)) for f, e in zip(found, exact)]
    return float(np.mean(hits))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--noise", type=float, default=1.5, help="within-cluster spread (cluster centres have unit variance)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--m", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-hnsw", action="store_true", help="HNSW builds take minutes at 100,000 users")
    args = parser.parse_args()
    import faiss

    faiss.omp_set_num_threads(args.threads)
    vectors = clustered_users(args.users, args.dim, args.clusters, args.seed, args.noise)
    ids = [f"u{i}" for i in range(args.users)]
    rng = np.random.default_rng(args.seed + 1)
    asking = rng.choice(args.users, size=args.queries, replace=False)
    queries, exclude = vectors[asking], [ids[i] for i in asking]
    print(f"{args.users} users, {args.dim}-d, {args.clusters} clusters (noise {args.noise}), {args.queries} queries, m={args.m}, "
          f"threads={args.threads}")
    print(f"{'index':<8} {'setting':<14} {'build s':>8} {'ms/query':>9} {'memory MB':>10} {'recall@10':>10}")
    exact_results = None
    defaults = UserIndex("ivf").spec
    plans = [("flat", {})]
    plans += [("ivf", {"nprobe": p}) for p in (8, 16, 32, 64)]
    if not args.skip_hnsw:
        plans += [("hnsw", {"ef_search": e}) for e in (32, 64, 128, 256)]
    built: dict[str, tuple[UserIndex, float]] = {}
    for kind, knobs in plans:
        if kind not in built:
            start = time.perf_counter()
            built[kind] = (UserIndex(kind, seed=args.seed).build(ids, vectors), time.perf_counter() - start)
        index, build_s = built[kind]
        if kind == "ivf":
            faiss.extract_index_ivf(index.index.index).nprobe = knobs["nprobe"]  # type: ignore[union-attr]
        elif kind == "hnsw":
            faiss.downcast_index(index.index.index).hnsw.efSearch = knobs["ef_search"]  # type: ignore[union-attr]
        start = time.perf_counter()
        found = index.search(queries, args.m, exclude=exclude)
        ms = (time.perf_counter() - start) * 1000 / args.queries
        if exact_results is None:
            exact_results = found
        setting = ", ".join(f"{k}={v}" for k, v in knobs.items()) or "exact"
        default = (kind == "ivf" and knobs["nprobe"] == defaults.nprobe) or (
            kind == "hnsw" and knobs["ef_search"] == defaults.ef_search)
        mark = "*" if default else " "
        print(f"{kind:<8} {setting:<14} {build_s:>8.2f} {ms:>9.3f} {index_bytes(index) / 2**20:>10.1f} "
              f"{recall(found, exact_results):>9.3f}{mark}")


if __name__ == "__main__":
    main()
