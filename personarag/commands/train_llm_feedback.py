"""`personarag train llm-feedback`: the collaborative retriever's scorer distilled from LLM feedback
(CFRAG's retriever fine-tuning) on the first examples of a LaMP split.

    personarag train llm-feedback --config eval/train_llm_feedback_lamp3.yaml [--resume | --overwrite]

Every option of `personarag.training.personal_runs.LLMFeedbackRunConfig` has a `--flag-name`
(flags win over the YAML file). `--resume` asks the LLM only for the training queries whose
feedback is not in OUTPUT_DIR/feedback.jsonl yet. The result loads as `collaborative:MODEL`
with `scorer=OUTPUT_DIR`.
"""

from __future__ import annotations

from typing import Any

from personarag.commands.train_common import training_command

GROUP = "train"
NAME = "llm-feedback"
HELP = "distill the collaborative retriever's scorer from an LLM's feedback on a LaMP split"


def report(config: Any, result: Any) -> str:
    weights = ", ".join(f"{w:.3f}" for w in result.weights)
    initial = ", ".join(f"{w:.3f}" for w in result.initial)
    return (f"trained the collaborative scorer on {result.queries} queries (the first {len(result.trained_on)} examples) "
            f"in {result.seconds:.0f} s; weights [{initial}] -> [{weights}]\n"
            f"saved to {result.scorer}; use it as collaborative:{config.model} with scorer={result.output_dir}\n")


add_arguments, run = training_command("personarag.training.personal_runs", "LLMFeedbackRunConfig", "run_llm_feedback", report)
