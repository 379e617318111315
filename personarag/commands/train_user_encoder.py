"""`personarag train user-encoder`: the contrastive user encoder of the collaborative retriever,
trained on the users of a LaMP split.

    personarag train user-encoder --config eval/train_user_encoder_lamp3.yaml [--resume | --overwrite]

Every option of `personarag.training.personal_runs.UserEncoderRunConfig` has a `--flag-name`
(flags win over the YAML file). The result loads as `collaborative:ITEM_MODEL` with
`user_encoder=OUTPUT_DIR`.
"""

from __future__ import annotations

from typing import Any

from personarag.commands.train_common import training_command

GROUP = "train"
NAME = "user-encoder"
HELP = "train the contrastive user encoder (CFRAG) on the users of a LaMP split"


def report(config: Any, result: Any) -> str:
    if result.reused:
        head = f"the run in {result.output_dir} was finished already ({result.users} users)"
    else:
        head = (f"trained the user encoder on {result.users} users in {result.seconds:.0f} s, "
                f"InfoNCE {result.losses[0]:.4f} -> {result.losses[-1]:.4f}")
    return f"{head}\nsaved to {result.output_dir}; use it as collaborative:{config.item_model} with user_encoder={result.output_dir}\n"


add_arguments, run = training_command("personarag.training.personal_runs", "UserEncoderRunConfig", "run_user_encoder", report)
