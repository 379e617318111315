"""Cross-encoder fine-tuning through the sentence-transformers `CrossEncoderTrainer`.

Written here by hand: the data (qrels positives + mined hard negatives, `training.data`),
the dataset layout each loss wants, the dev evaluator (rerank first-stage top-k of dev
queries and score with the toolkit's own `evaluation.metrics.evaluate`), and the run
bookkeeping (config + versions + model card beside the model, resume, overwrite).

Out of memory? Lower `batch_size` and raise `gradient_accumulation` (same effective batch),
lower `max_length` (cost grows with it), or lower `negatives` (listwise losses put
1 + negatives pairs per query in each row).

The saved model loads as the reranker spec `cross-encoder:OUTPUT_DIR`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from personarag.errors import InputError, require
from personarag.training import common
from personarag.training.trainer import resume_training, start_run, trainer_arguments
from personarag.training.cross_encoder_dev import (
    DEV_METRIC,
    dev_candidates,
    first_stage_score,
    interpolation_sweep,
    make_evaluator,
)
from personarag.training.data import TrainingData, build_from_beir, read_examples

if TYPE_CHECKING:
    from personarag.evaluation.qrels import Qrels
    from personarag.types import Ranking

logger = logging.getLogger(__name__)

LOSSES = ("bce", "mnrl", "lambda", "listnet")
HEADS = ("classifier", "mean")


@dataclass
class CrossEncoderTrainConfig:
    """Every option of a cross-encoder fine-tuning run (YAML keys and CLI flags share these names)."""

    output_dir: str
    base: str = "cross-encoder/ms-marco-MiniLM-L6-v2"
    dataset_dir: str | None = None  # BEIR layout: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv
    split: str = "train"
    examples: str | None = None  # or a JSONL of TrainingExample (e.g. LLM-feedback distillation)
    run: str | None = None  # TREC run to take negatives from instead of the miner
    miner: str = "bm25"  # retriever spec mining hard negatives (and giving dev candidates)
    negatives: int = 4
    mining_depth: int = 30
    sampling: str = "random"  # "random" among the top mining_depth, or "top"
    loss: str = "bce"  # bce | mnrl | lambda | listnet
    # "classifier": transformers' sequence-classification head on [CLS]; "mean": a linear layer
    # on the mean of the token vectors, the pooling a sentence-transformers bi-encoder was trained with
    head: str = "classifier"
    pos_weight: float | None = None  # BCE weight of positives; None = negatives per positive
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: int = 16
    gradient_accumulation: int = 1
    learning_rate: float = 2e-5
    warmup: float = 0.1  # fraction of the steps (< 1) or a number of steps
    weight_decay: float = 0.01
    max_length: int = 256
    dev_split: str | None = None  # a qrels split of the same dataset used as dev ...
    dev_queries: int = 0  # ... or this many training queries held out as dev (seeded)
    dev_depth: int = 30  # first-stage candidates reranked per dev query
    eval_steps: int = 100  # also the checkpoint interval
    eval_before_training: bool = True
    save_total_limit: int = 2
    logging_steps: int = 10
    seed: int = 0
    threads: int | None = None  # torch CPU threads
    bf16: bool = False
    fp16: bool = False

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise InputError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.head not in HEADS:
            raise InputError(f"head must be one of {HEADS}, got {self.head!r}")
        if (self.dataset_dir is None) == (self.examples is None):
            raise InputError("give exactly one training source: dataset_dir (BEIR layout) or examples (JSONL)")
        for name in ("batch_size", "gradient_accumulation", "max_length", "eval_steps", "dev_depth"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        if self.loss == "mnrl" and self.batch_size < 2 and self.negatives < 1:
            raise InputError("the mnrl loss needs in-batch or mined negatives: batch_size >= 2 or negatives >= 1")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrainResult:
    output_dir: Path
    report: dict[str, Any]
    dev_history: list[dict[str, float]]
    best_checkpoint: str | None
    seconds: float


def train_cross_encoder(config: CrossEncoderTrainConfig, *, resume: bool = False, overwrite: bool = False) -> TrainResult:
    """Fine-tune `config.base` into a cross-encoder saved under `config.output_dir`."""
    require("sentence_transformers", "train", purpose="cross-encoder training")
    require("datasets", "train", purpose="cross-encoder training")
    out = start_run(config, resume=resume, overwrite=overwrite)
    started, cpu_started = time.perf_counter(), time.process_time()

    train_data, dev = _load_data(config)
    logger.info("training data: %s", train_data.report)
    model = _load_base(config)
    dataset, dropped = _to_dataset(train_data, config)
    loss = _make_loss(model, config, train_data)
    evaluator = make_evaluator(*dev, model_batch_size=max(32, config.batch_size)) if dev else None

    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments

    args = CrossEncoderTrainingArguments(**trainer_arguments(
        config, out,
        per_device_eval_batch_size=max(32, config.batch_size),
        weight_decay=config.weight_decay,
        eval_strategy="steps" if evaluator else "no",
        eval_steps=config.eval_steps,
        eval_on_start=bool(evaluator and config.eval_before_training),
        save_strategy="steps",
        save_steps=config.eval_steps,
        load_best_model_at_end=evaluator is not None,
        metric_for_best_model=f"eval_dev_{DEV_METRIC}" if evaluator else None,
        greater_is_better=True,
        fp16=config.fp16,
        batch_sampler="no_duplicates" if config.loss == "mnrl" else "batch_sampler",
        dataloader_drop_last=config.loss == "mnrl",
    ))
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=dataset, loss=loss, evaluator=evaluator)
    _, checkpoint = resume_training(trainer, out, resume=resume)
    if trainer.state.global_step == 0:
        raise InputError(
            f"no training step ran: {len(dataset)} rows, batch_size {config.batch_size}"
            + (" (the mnrl loss needs enough rows without repeated texts to fill a batch)" if config.loss == "mnrl" else "")
        )
    model.save_pretrained(str(out))

    history = [
        {"step": row["step"], "epoch": row.get("epoch"), DEV_METRIC: row[f"eval_dev_{DEV_METRIC}"]}
        for row in trainer.state.log_history
        if f"eval_dev_{DEV_METRIC}" in row
    ]
    seconds = time.perf_counter() - started
    report = train_data.report.to_dict()
    report["rows_dropped"] = dropped
    info = {
        "status": "done",
        "data": report,
        "dev": {"first_stage": first_stage_score(dev), "history": history, **interpolation_sweep(model, dev, config)}
        if dev
        else None,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "best_metric": trainer.state.best_metric,
        "global_step": trainer.state.global_step,
        "seconds": round(seconds, 1),
        "cpu_seconds": round(time.process_time() - cpu_started, 1),
        "resumed_from": checkpoint,
    }
    common.write_run_file(out, info)
    _write_model_card(out, config, info)
    return TrainResult(out, report, history, trainer.state.best_model_checkpoint, seconds)


def _load_data(config: CrossEncoderTrainConfig) -> tuple[TrainingData, tuple | None]:
    """Training data, and the dev set as (first-stage rankings, qrels) or None."""
    if config.examples is not None:
        return read_examples(config.examples), None
    train_ids, dev_qrels = _split_queries(config)
    miner = config.miner if config.run is None else None
    data = build_from_beir(
        config.dataset_dir,
        config.split,
        miner=miner,
        run=config.run,
        negatives=config.negatives,
        depth=config.mining_depth,
        sampling=config.sampling,
        seed=config.seed,
        query_ids=train_ids,
    )
    if dev_qrels is None:
        return data, None
    return data, dev_candidates(config, dev_qrels)


def dev_set(config: CrossEncoderTrainConfig) -> tuple[list[Ranking], Qrels] | None:
    """The dev candidates and qrels a run with this config selects its checkpoint on (None: no dev set)."""
    if config.examples is not None:
        return None
    _, dev_qrels = _split_queries(config)
    return None if dev_qrels is None else dev_candidates(config, dev_qrels)


def _split_queries(config: CrossEncoderTrainConfig) -> tuple[set[str] | None, Qrels | None]:
    """(training query ids, None = all; dev qrels): a dev split, or `dev_queries` held out (seeded)."""
    from personarag.evaluation.beir import load_beir

    if config.dev_split:
        return None, load_beir(config.dataset_dir, split=config.dev_split).qrels
    if not config.dev_queries:
        return None, None
    qrels = load_beir(config.dataset_dir, split=config.split).qrels
    ids = sorted(qrels.query_ids)
    if config.dev_queries >= len(ids):
        raise InputError(f"dev_queries={config.dev_queries} leaves no training query ({len(ids)} judged)")
    held_out = random.Random(config.seed).sample(ids, config.dev_queries)
    return set(ids) - set(held_out), qrels.subset(held_out)


def _load_base(config: CrossEncoderTrainConfig) -> Any:
    """The base checkpoint with a one-logit relevance head, or a clear error when it cannot have one."""
    from sentence_transformers.cross_encoder import CrossEncoder
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    try:
        hf_config = AutoConfig.from_pretrained(config.base)
    except (OSError, ValueError) as error:
        raise InputError(f"base model {config.base!r} could not be read as a transformers checkpoint: {error}") from error
    if hf_config.model_type not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES:
        raise InputError(
            f"base model {config.base!r} (model_type {hf_config.model_type!r}) has no sequence-classification "
            "head in transformers, so it cannot become a cross-encoder; use an encoder checkpoint (BERT, "
            "MiniLM, ELECTRA, XLM-R...) or an existing cross-encoder"
        )
    architectures = getattr(hf_config, "architectures", None) or []
    classifies = any(a.endswith("ForSequenceClassification") for a in architectures)
    if classifies and getattr(hf_config, "num_labels", 1) != 1:
        raise InputError(
            f"base model {config.base!r} is a {hf_config.num_labels}-label classifier ({architectures}); "
            "a relevance cross-encoder needs one output: start from its encoder or a 1-label cross-encoder"
        )
    if config.head == "classifier":
        return CrossEncoder(config.base, num_labels=1, max_length=config.max_length)
    return mean_pooling_cross_encoder(config.base, config.max_length)


def mean_pooling_cross_encoder(base: str, max_length: int) -> Any:
    """Transformer -> mean pooling -> Linear(dim, 1) writing the "scores" a CrossEncoder reads.

    sentence-transformers saves and reloads this module list as it is, so the result
    still loads as `cross-encoder:PATH`.
    """
    import torch
    from sentence_transformers.base.modules import Dense, Transformer
    from sentence_transformers.cross_encoder import CrossEncoder
    from sentence_transformers.sentence_transformer.modules import Pooling

    encoder = Transformer(base, transformer_task="feature-extraction", processor_kwargs={"model_max_length": max_length})
    dim = encoder.get_embedding_dimension()
    pooling = Pooling(dim, "mean")
    score = Dense(dim, 1, activation_function=torch.nn.Identity(), module_output_name="scores")
    return CrossEncoder(modules=[encoder, pooling, score])


def _to_dataset(data: TrainingData, config: CrossEncoderTrainConfig) -> tuple[Any, int]:
    """The column layout each sentence-transformers loss expects; returns it and the rows left out."""
    from datasets import Dataset

    if config.loss == "bce":
        return Dataset.from_dict({
            "query": [e.query_text for e in data.examples],
            "document": [e.doc_text for e in data.examples],
            "label": [min(1.0, max(0.0, e.label)) for e in data.examples],
        }), 0
    groups = data.groups()
    if config.loss == "mnrl":
        rows: dict[str, list[str]] = {"query": [], "positive": []}
        for i in range(config.negatives):
            rows[f"negative_{i + 1}"] = []
        dropped = 0
        for group in groups:
            if len(group.negatives) < config.negatives:
                dropped += len(group.positives)
                continue
            for positive in group.positives:
                rows["query"].append(group.query_text)
                rows["positive"].append(positive.doc_text)
                for i, negative in enumerate(group.negatives[: config.negatives]):
                    rows[f"negative_{i + 1}"].append(negative.doc_text)
        if not rows["query"]:
            raise InputError(f"the mnrl loss needs {config.negatives} negatives per query; no query has that many")
        return Dataset.from_dict(rows), dropped
    docs, labels, queries = [], [], []
    for group in groups:
        members = group.positives + group.negatives
        queries.append(group.query_text)
        docs.append([e.doc_text for e in members])
        labels.append([e.label for e in members])
    return Dataset.from_dict({"query": queries, "docs": docs, "labels": labels}), 0


def _make_loss(model: Any, config: CrossEncoderTrainConfig, data: TrainingData) -> Any:
    from sentence_transformers.cross_encoder import losses

    if config.loss == "bce":
        weight = config.pos_weight
        if weight is None:
            weight = max(1.0, data.report.negatives / max(1, data.report.positives))
        import torch

        return losses.BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(float(weight)))
    if config.loss == "mnrl":
        return losses.MultipleNegativesRankingLoss(model, num_negatives=config.negatives)
    if config.loss == "lambda":
        return losses.LambdaLoss(model)
    return losses.ListNetLoss(model)


def _write_model_card(out: Path, config: CrossEncoderTrainConfig, info: dict[str, Any]) -> None:
    data = info["data"]
    dev = info.get("dev")
    lines = [
        "---",
        "library_name: sentence-transformers",
        "pipeline_tag: text-ranking",
        "tags: [cross-encoder, reranker, personarag]",
        "---",
        f"# Cross-encoder fine-tuned from `{config.base}`",
        "",
        f"Load it in personarag as the reranker spec `cross-encoder:{out}`, or with "
        "`sentence_transformers.CrossEncoder(PATH)`.",
        "",
        "## Data",
        f"- source: {data['source']}",
        f"- {data['queries']} queries, {data['positives']} positives, {data['negatives']} negatives "
        f"({config.negatives} per query, sampling `{config.sampling}`)",
        f"- left out: {data['missing_docs']} judgements of missing documents, {data['missing_queries']} "
        f"missing queries, {data['queries_without_negatives']} queries without negatives, "
        f"{data.get('rows_dropped', 0)} rows dropped by the loss layout",
        "",
        "## Training",
        f"- head: `{config.head}`; loss: `{config.loss}`; epochs {config.epochs}, max_steps {config.max_steps}, batch {config.batch_size} "
        f"x accumulation {config.gradient_accumulation}, lr {config.learning_rate}, max_length {config.max_length}, "
        f"seed {config.seed}",
        f"- steps: {info['global_step']}; wall time {info['seconds']} s (CPU time {info['cpu_seconds']} s)",
    ]
    if dev:
        lines += ["", "## Dev metrics (first-stage top-k reranked; personarag.evaluation.metrics)"]
        if dev.get("first_stage") is not None:
            lines.append(f"- first stage ({config.miner}) nDCG@10: {dev['first_stage']:.4f}")
        lines += [f"- step {row['step']}: nDCG@10 {row[DEV_METRIC]:.4f}" for row in dev["history"]]
        best = info.get("best_metric")
        if best is not None and not math.isnan(best):
            lines.append(f"- kept: {info['best_checkpoint']} (nDCG@10 {best:.4f})")
        sweep = dev.get("first_stage_weight")
        if sweep:
            cells = ", ".join(f"{w}: {v:.4f}" for w, v in sweep["ndcg@10"].items())
            lines.append(f"- kept model interpolated with the first stage, nDCG@10 by first_stage_weight: {cells}")
            lines.append(f"- best first_stage_weight on dev: {sweep['best']}")
    lines += ["", "## Library versions", common.versions_markdown(common.library_versions()), ""]
    lines += ["The full config is in `personarag_training.json`.", ""]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")
