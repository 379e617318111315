"""Supervised fine-tuning of LLM rerankers with LoRA, through TRL's `SFTTrainer` and peft.

Targets are built with the rerankers' own prompt templates (`PointwiseReranker.template`,
`ListwiseReranker.template`), so a trained adapter sees at inference exactly the prompts
it was trained on:
- pointwise `yesno`: "yes" for positives, "no" for negatives (the reranker reads
  P(yes) / (P(yes) + P(no)) at the first answer token);
- pointwise `fine`: the digit round(label * k) on 0..k (qrels positives: k);
- pointwise `reason`: "<think>REASONING</think>\\nScore: N" (reasoning from the examples'
  optional `reasoning` field; empty when absent);
- listwise: the permutation "[2] > [1] > [3]" of a window of candidates, distilled from a
  teacher ranking: `qrels` (judged relevance, then first-stage order), a TREC run file,
  or any reranker spec (e.g. `cross-encoder:PATH`).

The adapter is saved in OUTPUT_DIR and loads as `pointwise:BASE+OUTPUT_DIR` (or
`listwise:...`): the transformers backend applies `+ADAPTER` with peft.
Out of memory: lower `batch_size` / `max_length` / `window` / `max_doc_tokens`, raise
`gradient_accumulation`, turn on `gradient_checkpointing`, use `bf16` on a GPU.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personarag.errors import InputError, require
from personarag.training.lora import (
    LoRATrainingOptions, adapter_arguments, chat_dicts, load_causal_lm, load_tokenizer, lora_config, resolve_base,
    train_adapter, truncate, write_adapter_card,
)
from personarag.training.trainer import start_run
from personarag.training.data import TrainingData, build_from_beir, read_examples

logger = logging.getLogger(__name__)

KINDS = ("pointwise", "listwise")
POINTWISE_MODES = ("yesno", "fine", "reason")


@dataclass(kw_only=True)
class LLMSFTConfig(LoRATrainingOptions):
    """Options of `personarag train pointwise|listwise` (YAML keys and flags share these names)."""

    output_dir: str
    base: str  # causal LM folder, hub name, or a .gguf file (converted once by the LLM layer)
    kind: str = "pointwise"
    mode: str = "yesno"  # pointwise: yesno | fine | reason
    k: int = 3  # pointwise fine/reason scale 0..k
    prompt: str | None = None  # a template name/path; default: the reranker's own
    reasoning: bool = False  # listwise: ReasonRank-style <think> targets
    dataset_dir: str | None = None
    split: str = "train"
    examples: str | None = None  # JSONL of TrainingExample (pointwise)
    run: str | None = None  # TREC run giving negatives / listwise candidates
    miner: str = "bm25"
    negatives: int = 3
    mining_depth: int = 30
    sampling: str = "random"
    max_queries: int | None = None  # first N training queries (seeded shuffle)
    held_out_queries: int = 0  # judged queries kept out of training (seeded; `held_out_query_ids`), e.g. to pick a fusion weight on
    teacher: str = "qrels"  # listwise: qrels | TREC run path | reranker spec
    window: int = 10  # listwise: candidates per prompt
    shuffle_window: bool = True  # listwise: present the window in a seeded random order
    max_doc_tokens: int = 128
    max_length: int = 1024

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "pointwise" and self.mode not in POINTWISE_MODES:
            raise InputError(f"pointwise mode must be one of {POINTWISE_MODES}, got {self.mode!r}")
        if (self.dataset_dir is None) == (self.examples is None):
            raise InputError("give exactly one training source: dataset_dir (BEIR layout) or examples (JSONL)")
        if self.kind == "listwise" and self.dataset_dir is None:
            raise InputError("listwise SFT needs dataset_dir (queries, candidates and qrels); examples JSONL is pointwise only")
        for name in ("batch_size", "gradient_accumulation", "max_length", "window", "max_doc_tokens", "lora_r", "k"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class SFTResult:
    output_dir: Path
    rows: int
    dropped: int
    seconds: float
    train_loss: float | None


def reranker_for(config: LLMSFTConfig) -> Any:
    """The reranker whose prompts the targets are written for (its LLM is never loaded here)."""
    if config.kind == "pointwise":
        from personarag.rerankers.pointwise import PointwiseReranker

        return PointwiseReranker(config.base, mode=config.mode, k=config.k, prompt=config.prompt,
                                 max_doc_tokens=config.max_doc_tokens)
    from personarag.rerankers.listwise import ListwiseReranker

    return ListwiseReranker(config.base, window=config.window, stride=max(1, config.window // 2),
                            reasoning=config.reasoning, prompt=config.prompt, max_doc_tokens=config.max_doc_tokens)


def pointwise_rows(data: TrainingData, config: LLMSFTConfig, tokenizer: Any) -> list[dict[str, Any]]:
    """Prompt/completion rows in TRL's conversational format, one per (query, document) example."""
    from personarag.prompts import doc_text
    from personarag.types import Document

    reranker = reranker_for(config)
    rows = []
    for example in data.examples:
        text = truncate(tokenizer, doc_text(Document(example.doc_id, example.doc_text)), config.max_doc_tokens)
        prompt = reranker.template.render(query=example.query_text, text=text, k=reranker.k)
        label = min(1.0, max(0.0, example.label))
        if config.mode == "yesno":
            answers = reranker.answers
            target = answers[0] if label >= 0.5 else answers[1]
        elif config.mode == "fine":
            target = str(round(label * reranker.k))
        else:
            target = f"<think>{example.reasoning or ''}</think>\nScore: {round(label * reranker.k)}"
        rows.append({"prompt": chat_dicts(prompt), "completion": [{"role": "assistant", "content": target}]})
    return rows


def permutation_text(order: list[int]) -> str:
    return " > ".join(f"[{i + 1}]" for i in order)


def listwise_rows(config: LLMSFTConfig, tokenizer: Any) -> list[dict[str, Any]]:
    """One window per training query: first-stage candidates, target order from the teacher."""
    from personarag.evaluation.beir import load_beir
    from personarag.prompts import doc_text
    from personarag.training.data import candidates_from_run, mine_candidates

    data = load_beir(config.dataset_dir, split=config.split)
    queries = select_queries(data.queries, config)
    if config.run is not None:
        candidates = candidates_from_run(config.run, config.window)
    else:
        candidates = mine_candidates(config.miner, data.corpus, queries, config.window)
    windows = {q.id: [d for d in candidates.get(q.id, []) if d in data.corpus][: config.window] for q in queries}
    teacher = teacher_orders(config, data, queries, windows)
    reranker = reranker_for(config)
    rows = []
    for query in queries:
        ids = windows[query.id]
        if len(ids) < 2:
            continue
        shown = list(ids)
        if config.shuffle_window:
            random.Random(f"{config.seed}\x00{query.id}").shuffle(shown)
        texts = [truncate(tokenizer, doc_text(data.corpus[d]), config.max_doc_tokens) for d in shown]
        block = reranker.template.render_docs((str(j + 1), t) for j, t in enumerate(texts))
        prompt = reranker.template.render(query=query.text, documents=block, num=len(shown))
        rank = {d: r for r, d in enumerate(teacher[query.id])}
        order = sorted(range(len(shown)), key=lambda j: (rank.get(shown[j], len(rank)), ids.index(shown[j])))
        target = permutation_text(order)
        if config.reasoning:
            target = "<think></think>\n" + target
        rows.append({"prompt": chat_dicts(prompt), "completion": [{"role": "assistant", "content": target}]})
    return rows


def select_queries(queries: list[Any], config: LLMSFTConfig) -> list[Any]:
    if config.max_queries is None or config.max_queries >= len(queries):
        return list(queries)
    return random.Random(config.seed).sample(list(queries), config.max_queries)


def teacher_orders(config: LLMSFTConfig, data: Any, queries: list[Any], windows: dict[str, list[str]]) -> dict[str, list[str]]:
    """Each query's window in the teacher's order (best first)."""
    if config.teacher == "qrels":
        out = {}
        for query in queries:
            judged = data.qrels.get(query.id, {})
            ids = windows[query.id]
            out[query.id] = sorted(ids, key=lambda d: (-judged.get(d, 0), ids.index(d)))
        return out
    if Path(config.teacher).is_file():
        from personarag.training.data import candidates_from_run

        ranked = candidates_from_run(config.teacher)
        return {q.id: [d for d in ranked.get(q.id, []) if d in set(windows[q.id])] for q in queries}
    from personarag import registry
    from personarag.types import Ranking, ScoredDoc

    reranker = registry.build(config.teacher, role="reranker")
    rankings = [Ranking(q, tuple(ScoredDoc(data.corpus[d], 0.0) for d in windows[q.id])) for q in queries if windows[q.id]]
    return {r.query.id: r.ids for r in reranker.rerank(rankings)}


def train_llm_sft(config: LLMSFTConfig, *, resume: bool = False, overwrite: bool = False) -> SFTResult:
    """LoRA SFT of `config.base` on reranking targets; the adapter is saved in `config.output_dir`."""
    require("trl", "train", purpose="LLM reranker SFT")
    out = start_run(config, resume=resume, overwrite=overwrite)
    started = time.perf_counter()
    base = resolve_base(config.base)
    tokenizer = load_tokenizer(base)

    if config.kind == "pointwise":
        data = read_examples(config.examples) if config.examples else build_from_beir(
            config.dataset_dir, config.split, miner=config.miner if config.run is None else None, run=config.run,
            negatives=config.negatives, depth=config.mining_depth, sampling=config.sampling, seed=config.seed,
            query_ids=_query_subset(config))
        rows = pointwise_rows(data, config, tokenizer)
        report = data.report.to_dict()
    else:
        rows = listwise_rows(config, tokenizer)
        report = {"source": f"{config.dataset_dir}:{config.split}", "windows": len(rows), "teacher": config.teacher}
    rows, dropped = fit_rows(rows, tokenizer, config.max_length)
    if not rows:
        raise InputError(f"no training row fits max_length={config.max_length} tokens; raise it or lower max_doc_tokens")

    trainer = sft_trainer(config, rows, base, tokenizer, out)
    result, checkpoint = train_adapter(trainer, tokenizer, out, resume=resume)
    seconds = time.perf_counter() - started
    info = {
        "status": "done", "data": report, "rows": len(rows), "rows_dropped_too_long": dropped, "base_resolved": base,
        "global_step": trainer.state.global_step, "train_loss": result.training_loss, "seconds": round(seconds, 1),
        "resumed_from": checkpoint,
    }
    write_adapter_card(out, config, info, example=rows[0])
    return SFTResult(out, len(rows), dropped, seconds, result.training_loss)


def sft_trainer(config: LLMSFTConfig, rows: list[dict[str, Any]], base: str, tokenizer: Any, out: Path) -> Any:
    """TRL's SFTTrainer over `rows` with a fresh LoRA adapter on `base`; the loss is on the completion
    (the answer and the end-of-turn tokens) only, its prompt tokenised as the LLM layer renders it."""
    peft = require("peft", "train", purpose="LoRA adapters")
    datasets = require("datasets", "train")
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(**adapter_arguments(config, out, max_length=config.max_length, completion_only_loss=True))
    return SFTTrainer(
        model=load_causal_lm(base, config.bf16), args=args, train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer, peft_config=lora_config(peft, config),
    )


def _query_subset(config: LLMSFTConfig) -> list[str] | None:
    if config.max_queries is None and not config.held_out_queries:
        return None
    from personarag.evaluation.beir import load_beir

    data = load_beir(config.dataset_dir, split=config.split)
    held_out = set(held_out_query_ids(config))
    return [q.id for q in select_queries([q for q in data.queries if q.id not in held_out], config)]


def held_out_query_ids(config: LLMSFTConfig) -> list[str]:
    """The judged queries a run keeps out of training: drawn as the cross-encoder trainer draws its
    `dev_queries` (sorted judged ids, `random.Random(seed).sample`), so equal seeds hold out the same ones."""
    if not config.held_out_queries:
        return []
    from personarag.evaluation.beir import load_beir

    ids = sorted(load_beir(config.dataset_dir, split=config.split).qrels.query_ids)
    if config.held_out_queries >= len(ids):
        raise InputError(f"held_out_queries={config.held_out_queries} leaves no training query ({len(ids)} judged in {config.split!r})")
    return random.Random(config.seed).sample(ids, config.held_out_queries)


def fit_rows(rows: list[dict[str, Any]], tokenizer: Any, max_length: int) -> tuple[list[dict[str, Any]], int]:
    """Rows whose full chat fits `max_length` tokens (TRL would cut the target off the end otherwise)."""
    kept = []
    for row in rows:
        ids = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=True)
        if hasattr(ids, "keys"):
            ids = ids["input_ids"]
        if len(ids) <= max_length:
            kept.append(row)
    if len(kept) < len(rows):
        logger.warning("%d of %d training rows exceed max_length=%d tokens and were left out", len(rows) - len(kept), len(rows), max_length)
    return kept, len(rows) - len(kept)
