"""`personarag train cross-encoder`: fine-tune an encoder into a cross-encoder reranker.

Options come from a YAML `--config` file and/or flags (flags win); every option of
`personarag.training.cross_encoder.CrossEncoderTrainConfig` has a `--flag-name`.
Out of memory: lower --batch-size and raise --gradient-accumulation, or lower --max-length.
The result loads as the reranker spec `cross-encoder:OUTPUT_DIR`.
"""

from __future__ import annotations

import argparse
import sys

from personarag.commands.train_common import add_training_arguments

GROUP = "train"
NAME = "cross-encoder"
HELP = "fine-tune a cross-encoder reranker (qrels positives + mined hard negatives) with dev-set model selection"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from personarag.training.cross_encoder import CrossEncoderTrainConfig

    add_training_arguments(parser, CrossEncoderTrainConfig)


def run(args: argparse.Namespace) -> int:
    from personarag.training.common import config_from_args
    from personarag.training.cross_encoder import CrossEncoderTrainConfig, train_cross_encoder

    config = config_from_args(CrossEncoderTrainConfig, args)
    result = train_cross_encoder(config, resume=args.resume, overwrite=args.overwrite)
    report = result.report
    sys.stdout.write(
        f"trained on {report['queries']} queries ({report['positives']} positives, {report['negatives']} negatives) "
        f"in {result.seconds:.0f} s\n"
    )
    for row in result.dev_history:
        sys.stdout.write(f"dev step {row['step']}: nDCG@10 {row['ndcg@10']:.4f}\n")
    sys.stdout.write(f"saved to {result.output_dir}; rerank with the spec cross-encoder:{result.output_dir}\n")
    return 0
