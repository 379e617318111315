"""The Ray engine's overhead against a local run: cluster start, actor start, per-batch cost.

    PYTHONPATH=$PWD python benchmarks/bench_ray.py [--dataset-dir /work/shared/data/beir/scifact] [--queries 300]

BM25 over a BEIR split (default: SciFact test from /work/shared/data; the beir_mini fixture when
it is absent), one local run, then Ray runs with one actor at two batch sizes, all into fresh
folders; every Ray run.trec is checked equal to the local one. Per-batch overhead is the extra
time of the small-batch run over the large-batch run (both after a first, cold run)
divided by the extra batches.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = Path("/work/shared/data/beir/scifact")
    parser.add_argument("--dataset-dir", type=Path, default=default if default.is_dir() else ROOT / "tests/fixtures/beir_mini")
    parser.add_argument("--queries", type=int, default=None, help="first N judged queries (default: all)")
    parser.add_argument("--batch-sizes", type=int, nargs=2, default=(64, 4))
    args = parser.parse_args()

    import ray

    from personarag import Pipeline
    from personarag.evaluation.beir import load_beir
    from personarag.experiment import Experiment, RankingDataset

    data = RankingDataset.from_beir(load_beir(args.dataset_dir), args.queries)
    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        def run(name: str, engine: str, batch_size: int) -> float:
            started = time.perf_counter()
            options = {"ray_options": {"actors": 1}} if engine == "ray" else {}
            Experiment(Pipeline(["bm25"], k=100), data, ["nDCG@10"], output_dir=Path(tmp) / name, batch_size=batch_size,
                       progress=False, engine=engine, **options).run()
            return time.perf_counter() - started

        local = run("local", "local", args.batch_sizes[0])
        rows.append(("local run (index + retrieve)", local, ""))
        started = time.perf_counter()
        env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": env}, log_to_driver=False)
        rows.append(("ray.init (local cluster, 2 CPUs)", time.perf_counter() - started, ""))
        try:
            big, small = args.batch_sizes
            cold = run("raycold", "ray", big)
            rows.append((f"first ray run, 1 actor, batch {big} (cold workers)", cold, f"{cold / local:.2f}x local"))
            timings = {}
            for size in (big, small):
                timings[size] = run(f"ray{size}", "ray", size)
                batches = -(-len(data.queries) // size)
                rows.append((f"ray run, 1 actor, batch {size} ({batches} batches)", timings[size],
                             f"{timings[size] / local:.2f}x local"))
            trec = (Path(tmp) / "local" / "run.trec").read_bytes()
            same = all((Path(tmp) / name / "run.trec").read_bytes() == trec for name in ("raycold", f"ray{big}", f"ray{small}"))
        finally:
            ray.shutdown()
        extra = -(-len(data.queries) // small) - -(-len(data.queries) // big)
        if extra > 0:
            rows.append(("per-batch overhead", (timings[small] - timings[big]) / extra, f"over {extra} extra batches"))
    print(f"{data.name}: {len(data.queries)} queries, {len(data.corpus)} documents, BM25 k=100; run.trec equal: {same}")
    print(f"| {'what':<50} | {'seconds':>8} | note |")
    print(f"|{'-' * 52}|{'-' * 10}|------|")
    for what, seconds, note in rows:
        print(f"| {what:<50} | {seconds:8.3f} | {note} |")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
