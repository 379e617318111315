"""Gather the fine-tuning acceptance numbers into eval/results/fine_tuning_scifact.{json,md}.

Reads the training runs' personarag_training.json (models/, not committed) and the metrics.json
that `personarag eval beir` wrote under eval/results/. Run from the repository root:
    .venv/bin/python eval/collect_training_results.py
"""

import json
from pathlib import Path

RESULTS = Path("eval/results")
NOTES = """\
- The acceptance runs rerank all of BM25's top 100 (max_length 128); the 300-step [CLS]-head run of the
  previous session reranked only the top 20.
- Training: `personarag train cross-encoder --config eval/train_cross_encoder_scifact.yaml --base MINILM`,
  head `mean`, BCE, 8 BM25 negatives per query from the top 100, 1000 steps of 16 pairs, 2 threads on the
  otherwise idle 2-core machine. The [CLS] classifier head with the same recipe reached dev nDCG@10 0.6698
  at step 250 and 0.6134 at step 500 (run stopped), against 0.6749 and 0.7268 for the mean head.
- Interpolation: (1 - w) * minmax(cross-encoder) + w * minmax(BM25) per query, w chosen on the 40 dev
  queries (eval/results/ce_dev_sweep.json) and applied unchanged to test (eval/interpolate_runs.py, the same
  fusion as `cross-encoder:PATH` with `first_stage_weight`). The untrained control gets the same w.
- SmolLM2-135M pointwise LoRA, 15 steps (60 examples): 0.4034 vs 0.4302 zero-shot; both far below BM25.
"""
RUNS = {
    "bm25": RESULTS / "scifact_bm25",
    "bm25 >> MiniLM mean head, untrained (top 100)": RESULTS / "scifact_bm25_ce_fresh_head",
    "bm25 >> MiniLM mean head, fine-tuned (top 100)": RESULTS / "scifact_bm25_ce_finetuned",
    "bm25 >> MiniLM [CLS] head, 300 steps (top 20; previous session)": RESULTS / "scifact_bm25_ce_finetuned_300",
    "bm25 >> SmolLM2 pointwise zero-shot (30 queries)": RESULTS / "scifact_pointwise_smollm2",
    "bm25 >> SmolLM2 pointwise LoRA (30 queries)": RESULTS / "scifact_pointwise_smollm2_lora",
}
# eval/interpolate_runs.py output: {weight: metrics} per reranked run, interpolated with BM25's run
INTERPOLATED = {
    "bm25 >> MiniLM mean head, untrained, interpolated with BM25": RESULTS / "scifact_bm25_ce_fresh_head_interpolated.json",
    "bm25 >> MiniLM mean head, fine-tuned, interpolated with BM25": RESULTS / "scifact_bm25_ce_finetuned_interpolated.json",
}
TRAINING = {"cross-encoder": Path("models/ce-minilm-mean-1000"), "pointwise-lora": Path("models/pw-smollm2-scifact")}


def read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


out = {"evaluation": {}, "training": {}}
for name, folder in RUNS.items():
    metrics, config = read(folder / "metrics.json"), read(folder / "config.json")
    if metrics:
        out["evaluation"][name] = {"metrics": metrics, "stats": read(folder / "stats.json"),
                                   "queries": config.get("max_queries") or "all", "run": str(folder)}
for name, path in INTERPOLATED.items():
    for weight, metrics in read(path).items():
        out["evaluation"][f"{name} (w={weight})"] = {"metrics": metrics, "queries": "all", "run": str(path)}
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
sweep = read(RESULTS / "ce_dev_sweep.json")
if sweep:
    lines += ["", "## Dev: fine-tuned cross-encoder interpolated with BM25 (eval/ce_dev_sweep.py)",
              f"- BM25 alone {sweep['first_stage']:.4f}; best weight {sweep['first_stage_weight']['best']}",
              "- " + ", ".join(f"w={w}: {v:.4f}" for w, v in sweep["first_stage_weight"]["ndcg@10"].items())]
lines += ["", "## Notes (written by hand into this script)", NOTES]
(RESULTS / "fine_tuning_scifact.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
