"""`personarag train pointwise`: LoRA SFT of an LLM for the pointwise reranker (yes/no, 0..k, reason-then-score)."""

from __future__ import annotations

from personarag.commands.train_common import llm_sft_command

GROUP = "train"
NAME = "pointwise"
HELP = "(= llm-sft --kind pointwise) LoRA-fine-tune an LLM on yes/no (or 0..k) relevance targets in the pointwise reranker's own prompts"
add_arguments, run = llm_sft_command("pointwise")
