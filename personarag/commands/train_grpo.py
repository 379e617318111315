"""`personarag train grpo`: GRPO (TRL) of a listwise or setwise reasoning reranker with ranking rewards."""

from __future__ import annotations

from typing import Any

from personarag.commands.train_common import training_command

GROUP = "train"
NAME = "grpo"
HELP = "GRPO of a reasoning reranker: nDCG@k (listwise) or choice (setwise) reward plus a format reward"


def report(config: Any, info: Any) -> str:
    last = info["reward_history"][-1] if info["reward_history"] else {}
    return (
        f"{info['global_step']} GRPO steps over {info['rows']} prompts in {info['seconds']:.0f} s; last reward {last.get('reward')}\n"
        f"saved to {config.output_dir}; rerank with the spec {config.kind}:{config.base}+{config.output_dir}\n"
    )


add_arguments, run = training_command("personarag.training.grpo", "GRPOTrainConfig", "train_grpo", report)
