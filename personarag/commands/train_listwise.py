"""`personarag train listwise`: LoRA SFT of an LLM on permutations distilled from a teacher ranking."""

from __future__ import annotations

import argparse

from personarag.commands import train_llm_sft_common

GROUP = "train"
NAME = "listwise"
HELP = "LoRA-fine-tune an LLM on listwise permutation targets from a teacher (qrels, a run file or a reranker spec)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    train_llm_sft_common.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return train_llm_sft_common.run(args, "listwise")
