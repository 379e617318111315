"""`personarag train grpo`: GRPO (TRL) of a listwise or setwise reasoning reranker with ranking rewards."""

from __future__ import annotations

import argparse
import sys

from personarag.commands.train_common import add_training_arguments

GROUP = "train"
NAME = "grpo"
HELP = "GRPO of a reasoning reranker: nDCG@k (listwise) or choice (setwise) reward plus a format reward"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from personarag.training.grpo import GRPOTrainConfig

    add_training_arguments(parser, GRPOTrainConfig)


def run(args: argparse.Namespace) -> int:
    from personarag.training.common import config_from_args
    from personarag.training.grpo import GRPOTrainConfig, train_grpo

    config = config_from_args(GRPOTrainConfig, args)
    info = train_grpo(config, resume=args.resume, overwrite=args.overwrite)
    last = info["reward_history"][-1] if info["reward_history"] else {}
    sys.stdout.write(
        f"{info['global_step']} GRPO steps over {info['rows']} prompts in {info['seconds']:.0f} s; last reward {last.get('reward')}\n"
        f"saved to {config.output_dir}; rerank with the spec {config.kind}:{config.base}+{config.output_dir}\n"
    )
    return 0
