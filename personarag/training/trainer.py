"""What every trainer here shares around the Hugging Face Trainer: the start of a run (output
folder, threads, seed), the TrainingArguments common to all, and training with resume."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from personarag.training import common

logger = logging.getLogger(__name__)


def start_run(config: Any, *, resume: bool, overwrite: bool) -> Path:
    """The prepared output folder of `config` (see `common.prepare_output_dir`), with threads and seed set."""
    out = common.prepare_output_dir(config.output_dir, config.to_dict(), overwrite=overwrite, resume=resume)
    common.set_threads(config.threads)
    common.set_seed(config.seed)
    return out


def trainer_arguments(config: Any, out: Path, **specific: Any) -> dict[str, Any]:
    """TrainingArguments keywords from the config fields every trainer has, updated with `specific`."""
    arguments = {
        "output_dir": str(out / common.CHECKPOINTS),
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps,
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation,
        "learning_rate": config.learning_rate,
        "warmup_steps": config.warmup,
        "logging_steps": config.logging_steps,
        "save_total_limit": config.save_total_limit,
        "seed": config.seed,
        "data_seed": config.seed,
        "bf16": config.bf16,
        "report_to": "none",
    }
    arguments.update(specific)
    return arguments


def resume_training(trainer: Any, out: Path, *, resume: bool) -> tuple[Any, str | None]:
    """`trainer.train()`, from the last checkpoint in `out` when resuming; (its result, that checkpoint)."""
    checkpoint = common.last_checkpoint(out) if resume else None
    if checkpoint:
        logger.info("resuming from %s", checkpoint)
    return trainer.train(resume_from_checkpoint=checkpoint), checkpoint
