"""`personarag train cross-encoder`: fine-tune an encoder into a cross-encoder reranker.

Options come from a YAML `--config` file and/or flags (flags win); every option of
`personarag.training.cross_encoder.CrossEncoderTrainConfig` has a `--flag-name`.
Out of memory: lower --batch-size and raise --gradient-accumulation, or lower --max-length.
The result loads as the reranker spec `cross-encoder:OUTPUT_DIR`.
"""

from __future__ import annotations

from typing import Any

from personarag.commands.train_common import training_command

GROUP = "train"
NAME = "cross-encoder"
HELP = "fine-tune a cross-encoder reranker (qrels positives + mined hard negatives) with dev-set model selection"


def report(config: Any, result: Any) -> str:
    data = result.report
    lines = [f"trained on {data['queries']} queries ({data['positives']} positives, {data['negatives']} negatives) in {result.seconds:.0f} s"]
    lines += [f"dev step {row['step']}: nDCG@10 {row['ndcg@10']:.4f}" for row in result.dev_history]
    lines.append(f"saved to {result.output_dir}; rerank with the spec cross-encoder:{result.output_dir}")
    return "\n".join(lines) + "\n"


add_arguments, run = training_command("personarag.training.cross_encoder", "CrossEncoderTrainConfig", "train_cross_encoder", report)
