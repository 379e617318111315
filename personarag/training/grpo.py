"""GRPO training of a reasoning reranker (Rank-R1 setwise / ReasonRank listwise) through TRL.

Each training query gives one prompt: a window of first-stage candidates (seeded shuffle,
at least one judged positive when `ensure_positive`), rendered with the reranker's own
template (`listwise-reason` / `setwise-reason` when `reasoning`). TRL's `GRPOTrainer`
samples `num_generations` completions per prompt and weighs them by the rewards of
`personarag.training.rewards`: nDCG@k of the produced order (listwise) or the relevance
of the chosen document (setwise), plus a format reward (weight `format_weight`).

On GPUs: `bf16`, `use_vllm` (TRL's vLLM generation, `vllm_mode` colocate or server),
a larger `num_generations` and `max_completion_length`, `gradient_checkpointing`.
The LoRA adapter is saved in OUTPUT_DIR and loads as `listwise:BASE+OUTPUT_DIR`
(or `setwise:...`).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personarag.errors import InputError, require
from personarag.training.lora import (
    LoRATrainingOptions,
    adapter_arguments,
    chat_dicts,
    load_causal_lm,
    load_tokenizer,
    lora_config,
    resolve_base,
    train_adapter,
    truncate,
    write_adapter_card,
)
from personarag.training.trainer import start_run
from personarag.training.rewards import FormatReward, ListwiseNDCGReward, SetwiseReward

KINDS = ("listwise", "setwise")


@dataclass(kw_only=True)
class GRPOTrainConfig(LoRATrainingOptions):
    """Options of `personarag train grpo` (YAML keys and flags share these names)."""

    output_dir: str
    base: str
    dataset_dir: str
    kind: str = "listwise"  # listwise | setwise
    reasoning: bool = True
    prompt: str | None = None
    split: str = "train"
    run: str | None = None  # TREC run of first-stage candidates instead of the miner
    miner: str = "bm25"
    mining_depth: int = 20
    window: int = 5  # documents per prompt (setwise: the set size c)
    ensure_positive: bool = True
    max_queries: int | None = None
    max_doc_tokens: int = 96
    k: int = 10  # nDCG@k of the listwise reward
    format_weight: float = 0.2
    num_generations: int = 4
    max_completion_length: int = 256
    temperature: float = 1.0
    beta: float = 0.0  # KL weight to the reference model (0: no reference model kept)
    batch_size: int = 4  # completions per device step; a multiple of num_generations
    learning_rate: float = 1e-5
    warmup: float = 0.0
    use_vllm: bool = False
    vllm_mode: str = "colocate"
    vllm_gpu_memory_utilization: float = 0.3

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.num_generations < 2:
            raise InputError(f"GRPO compares completions of a prompt: num_generations must be >= 2, got {self.num_generations}")
        if self.batch_size % self.num_generations:
            raise InputError(
                f"batch_size ({self.batch_size}) must be a multiple of num_generations ({self.num_generations}): "
                "each prompt's completions are scored as one group"
            )
        if self.window < 2:
            raise InputError(f"window must be >= 2, got {self.window}")


def build_prompts(config: GRPOTrainConfig, tokenizer: Any) -> list[dict[str, Any]]:
    """One row per training query: the conversational prompt and the shown documents' relevance."""
    from personarag.evaluation.beir import load_beir
    from personarag.prompts import doc_text
    from personarag.training.data import candidates_from_run, mine_candidates

    data = load_beir(config.dataset_dir, split=config.split)
    queries = list(data.queries)
    if config.max_queries is not None and config.max_queries < len(queries):
        queries = random.Random(config.seed).sample(queries, config.max_queries)
    if config.run is not None:
        candidates = candidates_from_run(config.run, config.mining_depth)
    else:
        candidates = mine_candidates(config.miner, data.corpus, queries, config.mining_depth)
    template = _template(config)
    rows = []
    for query in queries:
        judged = data.qrels.get(query.id, {})
        rng = random.Random(f"{config.seed}\x00{query.id}")
        ids = [d for d in candidates.get(query.id, []) if d in data.corpus][: config.window]
        positives = [d for d, rel in judged.items() if rel > 0 and d in data.corpus]
        if config.ensure_positive and positives and not any(judged.get(d, 0) > 0 for d in ids):
            ids = ids[: config.window - 1] + [rng.choice(positives)]
        if len(ids) < 2:
            continue
        rng.shuffle(ids)
        texts = [truncate(tokenizer, doc_text(data.corpus[d]), config.max_doc_tokens) for d in ids]
        if config.kind == "listwise":
            block = template.render_docs((str(j + 1), t) for j, t in enumerate(texts))
            prompt = template.render(query=query.text, documents=block, num=len(ids))
        else:
            from personarag.rerankers.setwise import LABELS

            labels = LABELS[: len(ids)]
            block = template.render_docs((labels[j], t) for j, t in enumerate(texts))
            prompt = template.render(query=query.text, documents=block, num=len(ids), labels=", ".join(labels),
                                     first_label=labels[0])
        rows.append({"prompt": chat_dicts(prompt), "relevance": [int(judged.get(d, 0)) for d in ids]})
    if not rows:
        raise InputError(f"{config.dataset_dir}:{config.split}: no query has two candidates to rank")
    return rows


def _template(config: GRPOTrainConfig) -> Any:
    if config.kind == "listwise":
        from personarag.rerankers.listwise import ListwiseReranker

        return ListwiseReranker(config.base, window=max(2, config.window), stride=1, reasoning=config.reasoning,
                                prompt=config.prompt).template
    from personarag.rerankers.setwise import SetwiseReranker

    return SetwiseReranker(config.base, c=config.window, reasoning=config.reasoning, prompt=config.prompt).template


def rewards_for(config: GRPOTrainConfig) -> tuple[list[Any], list[float]]:
    main = ListwiseNDCGReward(config.k) if config.kind == "listwise" else SetwiseReward()
    return [main, FormatReward(config.kind, think=config.reasoning)], [1.0, config.format_weight]


def train_grpo(
    config: GRPOTrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    extra_rewards: list[tuple[Any, float]] = (),
) -> dict[str, Any]:
    """GRPO with LoRA; returns the run info written to OUTPUT_DIR/personarag_training.json.

    `extra_rewards`: (TRL reward function, weight) pairs added to the ranking and format rewards
    (e.g. a length penalty on the reasoning).
    """
    require("trl", "train", purpose="GRPO training")
    peft = require("peft", "train", purpose="LoRA adapters")
    datasets = require("datasets", "train")
    out = start_run(config, resume=resume, overwrite=overwrite)
    started = time.perf_counter()
    base = resolve_base(config.base)
    tokenizer = load_tokenizer(base)
    rows = build_prompts(config, tokenizer)
    reward_funcs, weights = rewards_for(config)
    for function, weight in extra_rewards:
        reward_funcs.append(function)
        weights.append(float(weight))

    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(**adapter_arguments(
        config, out,
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        beta=config.beta,
        reward_weights=weights,
        use_vllm=config.use_vllm,
        vllm_mode=config.vllm_mode,
        vllm_gpu_memory_utilization=config.vllm_gpu_memory_utilization,
    ))
    trainer = GRPOTrainer(
        model=load_causal_lm(base, config.bf16), reward_funcs=reward_funcs, args=args,
        train_dataset=datasets.Dataset.from_list(rows), processing_class=tokenizer,
        peft_config=lora_config(peft, config),
    )
    result, checkpoint = train_adapter(trainer, tokenizer, out, resume=resume)
    history = [
        {k: row[k] for k in row if k == "step" or k.startswith("rewards/") or k in ("reward", "loss")}
        for row in trainer.state.log_history if "reward" in row
    ]
    info = {
        "status": "done", "data": {"source": f"{config.dataset_dir}:{config.split}", "prompts": len(rows)},
        "rows": len(rows), "base_resolved": base, "global_step": trainer.state.global_step,
        "train_loss": result.training_loss, "reward_history": history, "seconds": round(time.perf_counter() - started, 1),
        "resumed_from": checkpoint,
    }
    write_adapter_card(Path(out), config, info, example=None)
    return info
