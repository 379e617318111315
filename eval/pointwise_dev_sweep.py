"""Dev nDCG@10 of a pointwise LLM reranker interpolated with BM25, per first_stage_weight, on the
judged training queries a LoRA run held out (`held_out_queries`; never trained on, never test).

BM25's top DEPTH of each held-out query is reranked once; every weight of the grid then fuses the
same scores ((1 - w) * minmax(reranker) + w * minmax(BM25), `rerankers.interpolation`, the fusion
`cross-encoder:PATH` applies with `first_stage_weight`). LLM calls go through the CLI's default
cache (~/.cache/personarag/llm), so a rerun costs no model call.

    python eval/pointwise_dev_sweep.py TRAIN_CONFIG.yaml LLM_MODEL [DEPTH] > OUT.json
    # e.g. LLM_MODEL = .venv/.../SmolLM2-135M-Instruct.Q4_1.gguf+models/pw-smollm2-scifact-long
"""

import json
import os
import sys
import time

import yaml

from personarag import registry
from personarag.evaluation.beir import load_beir
from personarag.evaluation.metrics import evaluate
from personarag.llm import load_llm
from personarag.rerankers.interpolation import WEIGHT_GRID, interpolate_rankings
from personarag.training.llm_sft import LLMSFTConfig, held_out_query_ids

config_path, model, *rest = sys.argv[1:]
depth = int(rest[0]) if rest else 10
os.environ.setdefault("PERSONARAG_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "personarag"))
config = LLMSFTConfig(**{**yaml.safe_load(open(config_path)), "base": model})
dev_ids = set(held_out_query_ids(config))
data = load_beir(config.dataset_dir, split=config.split)
qrels = data.qrels.subset(dev_ids)
queries = [q for q in data.queries if q.id in dev_ids]
retriever = registry.build(config.miner, role="retriever")
retriever.index(data.corpus)
first = retriever.retrieve(queries, k=depth)
llm = load_llm({"spec": "transformers", "params": {"model": model, "threads": 1, "cache_dir": "auto"}})
reranker = registry.build("pointwise", role="reranker", llm=llm, mode=config.mode, max_doc_tokens=config.max_doc_tokens)
start = time.perf_counter()
reranked = reranker.rerank(first)
seconds = time.perf_counter() - start
grid = {}
for weight in WEIGHT_GRID:
    fused = [r.with_stage(interpolate_rankings(r, rr, weight), rr.trace[-1]) for r, rr in zip(first, reranked)]
    grid[str(weight)] = round(evaluate(fused, qrels, measures=("nDCG@10",)).aggregate["nDCG@10"], 4)
best = max(grid, key=lambda w: (grid[w], -float(w)))
print(json.dumps({
    "model": model, "train_config": config_path, "dev_queries": len(queries), "depth": depth,
    "held_out_query_ids": sorted(dev_ids), "first_stage_ndcg@10": grid["1.0"],
    "reranker_alone_ndcg@10": grid["0.0"], "ndcg@10_by_first_stage_weight": grid, "best_first_stage_weight": float(best),
    "rerank_seconds": round(seconds, 1),
}, indent=1))
