"""What the LoRA trainers of LLMs (SFT in `llm_sft`, GRPO in `grpo`) share: their options, the
base model and tokenizer (GGUF files through the LLM layer's conversion cache), the TrainingArguments
of an adapter run, training with resume, and the adapter's model card."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personarag.errors import require
from personarag.training import common
from personarag.training.trainer import resume_training, trainer_arguments


@dataclass(kw_only=True)
class LoRATrainingOptions:
    """The LoRA and trainer options of the LLM trainers (SFT, GRPO)."""

    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: str = "all-linear"
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 4
    gradient_accumulation: int = 1
    learning_rate: float = 2e-4
    warmup: float = 0.05
    gradient_checkpointing: bool = False
    logging_steps: int = 10
    save_steps: int = 100
    save_total_limit: int = 2
    seed: int = 0
    threads: int | None = None
    bf16: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def resolve_base(base: str) -> str:
    """A folder transformers can load: GGUF files go through the LLM layer's conversion cache."""
    path = Path(base).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        from personarag.llm.hf_loading import converted_gguf

        return str(converted_gguf(str(path.parent), path.name))
    return base


def load_tokenizer(base: str) -> Any:
    transformers = require("transformers", "train")
    tokenizer = transformers.AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def truncate(tokenizer: Any, text: str, max_tokens: int) -> str:
    """`text` cut to `max_tokens` tokens, collapsed like the rerankers' `_doc_text` does."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if len(encoded.input_ids) > max_tokens:
        text = text[: encoded["offset_mapping"][max_tokens - 1][1]]
    return " ".join(text.split())


def chat_dicts(chat: Any) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in chat]


def load_causal_lm(base: str, bf16: bool) -> Any:
    torch = require("torch", "train")
    transformers = require("transformers", "train")
    dtype = torch.bfloat16 if bf16 else torch.float32
    return transformers.AutoModelForCausalLM.from_pretrained(base, dtype=dtype)


def lora_config(peft: Any, config: Any) -> Any:
    return peft.LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=config.target_modules, task_type="CAUSAL_LM",
    )


def adapter_arguments(config: Any, out: Path, **specific: Any) -> dict[str, Any]:
    """TrainingArguments keywords of the LoRA trainers (SFT, GRPO): the shared ones plus checkpointing."""
    return trainer_arguments(
        config, out, gradient_checkpointing=config.gradient_checkpointing, save_steps=config.save_steps, **specific
    )


def train_adapter(trainer: Any, tokenizer: Any, out: Path, *, resume: bool) -> tuple[Any, str | None]:
    """Train (resuming when asked), then save the adapter and the tokenizer in `out`."""
    result, checkpoint = resume_training(trainer, out, resume=resume)
    trainer.save_model(str(out))
    tokenizer.save_pretrained(str(out))
    return result, checkpoint


def write_adapter_card(out: Path, config: Any, info: dict[str, Any], example: dict[str, Any] | None = None) -> None:
    """The run file (`common.write_run_file`) and a README model card for the adapter in `out`."""
    common.write_run_file(out, info)
    spec_kind = getattr(config, "kind", "listwise")
    lines = [
        "---", "library_name: peft", "tags: [reranker, lora, personarag]", "---",
        f"# LoRA adapter for `{config.base}` ({spec_kind} reranking)", "",
        f"Load: `{spec_kind}:{config.base}+{out}` in personarag.", "",
        "## Data", *(f"- {k}: {v}" for k, v in (info.get("data") or {}).items()), "",
        "## Training",
        f"- rows: {info.get('rows')} ({info.get('rows_dropped_too_long', 0)} longer than max_length left out)",
        f"- steps: {info['global_step']}, train loss {info.get('train_loss')}, wall time {info['seconds']} s",
        f"- LoRA r={config.lora_r} alpha={config.lora_alpha} dropout={config.lora_dropout} on {config.target_modules}; "
        f"lr {config.learning_rate}, batch {config.batch_size} x {config.gradient_accumulation}, seed {config.seed}",
    ]
    if example is not None:
        lines += ["", "## One training target", "```", str(example["completion"][0]["content"])[:500], "```"]
    lines += ["", "## Library versions", common.versions_markdown(common.library_versions()), "",
              "The full config is in `personarag_training.json`.", ""]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")
