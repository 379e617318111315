"""`personarag train pointwise`: LoRA SFT of an LLM for the pointwise reranker (yes/no, 0..k, reason-then-score)."""

from __future__ import annotations

import argparse

from personarag.commands import train_llm_sft_common

GROUP = "train"
NAME = "pointwise"
HELP = "LoRA-fine-tune an LLM on yes/no (or 0..k) relevance targets in the pointwise reranker's own prompts"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    train_llm_sft_common.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return train_llm_sft_common.run(args, "pointwise")
