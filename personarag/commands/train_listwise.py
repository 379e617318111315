"""`personarag train listwise`: LoRA SFT of an LLM on permutations distilled from a teacher ranking."""

from __future__ import annotations

from personarag.commands.train_common import llm_sft_command

GROUP = "train"
NAME = "listwise"
HELP = "(= llm-sft --kind listwise) LoRA-fine-tune an LLM on listwise permutation targets from a teacher (qrels, a run file or a reranker spec)"
add_arguments, run = llm_sft_command("listwise")
