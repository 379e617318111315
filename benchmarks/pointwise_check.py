"""What a pointwise yes/no reranker sees and says on SciFact test (BM25 top-20): the check behind
issue 11's "chance-level pointwise" finding.

Prints the rendered prompt of the first pair (chat template, truncated document), the answer
token ids, nDCG@10 of BM25 and of the reranker, mean P(yes) of relevant and non-relevant
candidates with the per-query AUC (0.5 = chance), the largest difference between batched
and one-at-a-time scores, and the model's generated answer beside its scores for a few pairs.

    .venv/bin/python benchmarks/pointwise_check.py [--model SPEC] [--queries 10] [--max-doc-tokens 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from llm_choice import add_model_arguments, load_model  # noqa: E402
from personarag.evaluation.beir import load_beir  # noqa: E402
from personarag.evaluation.metrics import evaluate  # noqa: E402
from personarag.llm import GenerationConfig  # noqa: E402
from personarag.rerankers.pointwise import PointwiseReranker  # noqa: E402
from personarag.retrievers.bm25 import BM25Retriever  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "beir" / "scifact"))
    parser.add_argument("--queries", type=int, default=10)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--max-doc-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    add_model_arguments(parser)
    args = parser.parse_args()
    llm = load_model(args, threads=args.threads, cache_dir=None)
    data = load_beir(args.data, "test")
    queries = data.queries[: args.queries]
    qrels = data.qrels.subset([q.id for q in queries])
    bm25 = BM25Retriever()
    bm25.index(data.corpus)
    candidates = bm25.retrieve(queries, k=args.depth)
    reranker = PointwiseReranker(llm, mode="yesno", max_doc_tokens=args.max_doc_tokens)
    answers = reranker._scored_answers()[0]
    first = reranker.template.render(query=queries[0].text, text=reranker._doc_text(candidates[0].docs[0].doc), k=3)
    if hasattr(llm, "render"):
        print("rendered prompt:\n" + llm.tokenizer.decode(llm.render(first, thinking=False)) + "<<end>>")
        print("answer token ids:", {a: llm.tokenizer(a, add_special_tokens=False).input_ids for a in answers})
    start = time.perf_counter()
    out = reranker.rerank(candidates)
    seconds = time.perf_counter() - start
    ndcg = lambda rankings: evaluate(rankings, qrels, ["nDCG@10"]).aggregate["nDCG@10"]  # noqa: E731
    relevant, other, aucs = [], [], []
    for ranking in out:
        judged = qrels.get(ranking.query.id, {})
        pos = [s.score for s in ranking.docs if judged.get(s.doc.id, 0) > 0]
        neg = [s.score for s in ranking.docs if judged.get(s.doc.id, 0) <= 0]
        relevant += pos
        other += neg
        if pos and neg:
            aucs.append(sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg)))
    prompts = [reranker.template.render(query=queries[0].text, text=reranker._doc_text(s.doc), k=3) for s in candidates[0].docs]
    batched = llm.score(prompts, answers)
    single = [llm.score([p], answers)[0] for p in prompts]
    gap = max(abs(a.logprobs[x] - b.logprobs[x]) for a, b in zip(batched, single) for x in answers)
    print(f"\n{llm.model_name}, {len(queries)} SciFact test queries, BM25 top-{args.depth}, docs cut to {args.max_doc_tokens} tokens, "
          f"{seconds / len(queries):.1f} s/query")
    print("| BM25 nDCG@10 | pointwise yes/no nDCG@10 | mean P(yes) relevant | mean P(yes) other | per-query AUC (queries) | max batched-single gap |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {ndcg(candidates):.4f} | {ndcg(out):.4f} | {statistics.mean(relevant):.3f} | {statistics.mean(other):.3f} | "
          f"{statistics.mean(aucs):.3f} ({len(aucs)}) | {gap:.1e} |")
    print("\ngenerated answer vs scores, first query's top 5:")
    for completion, scores in zip(llm.generate(prompts[:5], GenerationConfig(max_new_tokens=5)), batched[:5]):
        print(f"  {completion.text!r:32} {({a: round(v, 2) for a, v in scores.logprobs.items()})}")


if __name__ == "__main__":
    main()
