"""Gather the fine-tuning acceptance numbers into eval/results/fine_tuning_scifact.{json,md}.

Reads the training runs' personarag_training.json (models/, not committed) and the metrics.json
that `personarag eval beir` wrote under eval/results/. Run from the repository root:
    .venv/bin/python eval/collect_training_results.py
"""

import json
from pathlib import Path

RESULTS = Path("eval/results")
NOTES = """\
- All reranked runs rerank BM25's top 20 of its top 100 (rerank_depth 20; the SmolLM2 runs: top 10 of the
  first 30 judged test queries, where BM25 alone scores nDCG@10 0.7524, MRR@10 0.7206).
- The 2-core machine was shared with ~8 other processes (load 8-11): the cross-encoder run got ~13% of a core.
  It took 2486 s wall but 337.5 s of CPU time (1 thread), i.e. about 6 minutes on an idle machine; the
  config (100 steps of 16 pairs, max_length 128, half an epoch) was shrunk to fit the session, not the
  30-minute budget, which on an idle machine allows ~5x more (a full epoch or two at max_length 256).
- Target not met: the fine-tuned cross-encoder (0.5207) is far below BM25 (0.6762), though far above the
  same model with an untrained head (0.1739). Dev (40 held-out train queries, BM25 top 10): BM25 0.7712,
  model 0.6332 at step 50, 0.6551 at step 100, still rising when training stopped.
- SmolLM2-135M pointwise LoRA, 15 steps (60 examples): 0.4034 vs 0.4302 zero-shot; both far below BM25.
"""
RUNS = {
    "bm25": RESULTS / "scifact_bm25",
    "bm25 >> MiniLM fresh head": RESULTS / "scifact_bm25_ce_fresh_head",
    "bm25 >> MiniLM fine-tuned": RESULTS / "scifact_bm25_ce_finetuned",
    "bm25 >> SmolLM2 pointwise zero-shot (30 queries)": RESULTS / "scifact_pointwise_smollm2",
    "bm25 >> SmolLM2 pointwise LoRA (30 queries)": RESULTS / "scifact_pointwise_smollm2_lora",
}
TRAINING = {"cross-encoder": Path("models/ce-minilm-scifact"), "pointwise-lora": Path("models/pw-smollm2-scifact")}


def read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


out = {"evaluation": {}, "training": {}}
for name, folder in RUNS.items():
    metrics, config = read(folder / "metrics.json"), read(folder / "config.json")
    if metrics:
        out["evaluation"][name] = {"metrics": metrics, "stats": read(folder / "stats.json"),
                                   "queries": config.get("max_queries") or "all", "run": str(folder)}
for name, folder in TRAINING.items():
    info = read(folder / "personarag_training.json")
    if info:
        out["training"][name] = {k: info.get(k) for k in ("config", "data", "dev", "global_step", "seconds",
                                                          "cpu_seconds", "train_loss", "best_checkpoint", "best_metric",
                                                          "rows", "versions")}
(RESULTS / "fine_tuning_scifact.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
lines = ["# Fine-tuning acceptance on SciFact (written by eval/collect_training_results.py)", "",
         "| run | queries | nDCG@10 | MRR@10 |", "|---|---|---|---|"]
for name, row in out["evaluation"].items():
    m = row["metrics"]
    lines.append(f"| {name} | {row['queries']} | {m.get('nDCG@10', float('nan')):.4f} | {m.get('MRR@10', float('nan')):.4f} |")
for name, info in out["training"].items():
    lines += ["", f"## Training: {name}", f"- steps {info['global_step']}, wall {info['seconds']} s, CPU {info.get('cpu_seconds')} s",
              f"- data: {info['data']}"]
    if info.get("dev"):
        lines.append(f"- dev: {info['dev']}")
lines += ["", "## Notes (session of 2026-11-22, written by hand into this script)", NOTES]
(RESULTS / "fine_tuning_scifact.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
