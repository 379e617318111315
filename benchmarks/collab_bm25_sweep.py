"""Quality of the collaborative retriever's fast (bm25) variants next to the dense default, on
LaMP dev: the knn floor's primary metric (LaMP-3 MAE, LaMP-4/5 ROUGE-1) from the top-k, and the
overlap of each variant's top-k with the dense one. Quality only (no timing); uses the stores
that bench_collab_latency.py filled (item embeddings cached), so run that first.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/collab_bm25_sweep.py LaMP_3_amazon_mi [--queries 500]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_collab_latency import ROOT, knn_quality, minilm  # noqa: E402

VARIANTS = {
    "bm25 (split, alpha 0.5)": {"relevance": "bm25"},
    "bm25 words, alpha 0.5": {"relevance": "bm25", "tokenizer": "words"},
    "bm25 words, alpha 0.3": {"relevance": "bm25", "tokenizer": "words", "alpha": 0.3},
    "bm25 words, alpha 0.7": {"relevance": "bm25", "tokenizer": "words", "alpha": 0.7},
    "preference only (alpha 1)": {"relevance": "bm25", "alpha": 1.0},
    "bm25 words, own history only (m 0)": {"relevance": "bm25", "tokenizer": "words", "m": 0},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("split", help="a LaMP dev folder name, e.g. LaMP_3_amazon_mi")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "lamp")
    parser.add_argument("--stores", type=Path, default=Path(tempfile.gettempdir()) / "personarag-collab-bench")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--k", type=int, default=5)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    from personarag.evaluation.lamp import load_lamp
    from personarag.personal.collaborative import CollaborativeRetriever

    folder = args.data / args.split
    task = "-".join(args.split.split("_")[:2])
    data = load_lamp(task, folder / "dev_questions.json", folder / "dev_outputs.json")
    queries = data.queries[:args.queries]
    store = args.stores / f"{args.split}.db"
    if not store.exists():
        raise SystemExit(f"no store {store}: run benchmarks/bench_collab_latency.py first")
    dense = CollaborativeRetriever(minilm(), m=4, device="cpu", store=store).retrieve(queries, k=args.k)
    metric, value = knn_quality(task, dense, data.golds)
    print(f"{args.split}, {len(queries)} queries, k={args.k}\n")
    print(f"| variant | knn {metric} | overlap@{args.k} with dense |\n|---|---|---|")
    print(f"| dense (default) | {value:.3f} | 1.000 |")
    for name, options in VARIANTS.items():
        rankings = CollaborativeRetriever(minilm(), device="cpu", store=store, **{"m": 4, **options}).retrieve(queries, k=args.k)
        overlap = statistics.mean(len(set(a.ids) & set(b.ids)) / max(1, len(b.ids)) for a, b in zip(rankings, dense))
        print(f"| {name} | {knn_quality(task, rankings, data.golds)[1]:.3f} | {overlap:.3f} |")


if __name__ == "__main__":
    main()
