"""`personarag train llm-sft --kind pointwise|listwise`: LoRA SFT of an LLM reranker (one command for
both kinds; `train pointwise` and `train listwise` are the same command with the kind set)."""

from __future__ import annotations

from personarag.commands.train_common import llm_sft_report, training_command

GROUP = "train"
NAME = "llm-sft"
HELP = "LoRA-fine-tune an LLM reranker: --kind pointwise (yes/no or 0..k targets) or listwise (teacher permutations)"
add_arguments, run = training_command("personarag.training.llm_sft", "LLMSFTConfig", "train_llm_sft", llm_sft_report)
