"""The personalized reranker trained from LLM feedback on a LaMP split
(`personarag train llm-feedback --target personalized-reranker`).

1. The split's users are shuffled with `seed`; the examples of the first `train_users`
   fraction are the training examples, the others are held out (their ids are in the run file).
2. For each training example the first stage (`history:bm25` by default) gives up to
   `candidates` of the user's history items, and each gets a utility for producing the gold
   output: `utility="llm"`, the LLM's log-likelihood of the gold with that item alone in the
   prompt (as `training.llm_feedback` computes it); `utility="label"`, the agreement of the
   item's label with the gold (`soft_targets.label_utility`; no LLM). They are appended to
   `feedback.jsonl` as they come, so `--resume` asks only for the examples not there yet.
3. The soft target of each example is `softmax(utility / temperature)`; `base` is trained on
   (user context + query, candidate) pairs, built exactly as `PersonalCrossEncoderReranker`
   builds them, with the KL loss (`soft_targets.kl_loss`) through sentence-transformers'
   `CrossEncoderTrainer` (checkpoints every `save_steps`, resumable).

The folder (model, `personal_reranker.json`, run file, README) loads as `personal-cross-encoder:OUTPUT_DIR`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personarag.errors import InputError, require
from personarag.training import common
from personarag.training.llm_feedback import DEFAULT_TEMPLATE
from personarag.training.soft_targets import kl_loss, label_utility, soft_target
from personarag.training.trainer import resume_training, start_run, trainer_arguments

logger = logging.getLogger(__name__)

TARGET = "personalized-reranker"
FEEDBACK = "feedback.jsonl"
UTILITIES = ("llm", "label")


@dataclass
class PersonalRerankerRunConfig:
    """Every option of a personalized-reranker run (YAML keys and CLI flags share these names)."""

    output_dir: str = ""
    target: str = TARGET
    task: str = "LaMP-3"
    questions: str = ""
    outputs: str = ""
    base: str = ""  # the cross-encoder or encoder to start from (a folder or a hub name)
    utility: str = "llm"  # llm: the LLM's log-likelihood of the gold; label: label agreement (LaMP-2/3, no LLM)
    llm: Any = ""  # an LLM spec string, or {spec, params}; needed for utility=llm
    first_stage: str = "history:bm25"
    candidates: int = 10
    context_items: int = 3
    fields: list[str] | None = None  # item meta fields shown to the model; None: the task's label (LaMP-2 tag, LaMP-3 score)
    item_chars: int = 300
    candidate_chars: int | None = None  # characters kept per candidate (None: all)
    max_length: int = 256
    temperature: float = 1.0
    train_users: float = 0.6  # fraction of the split's users (seeded shuffle) whose examples are trained on
    max_train_queries: int | None = None  # at most this many of their examples (seeded sample; None: all): utility=llm asks `candidates` prompts each
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 4  # queries per step (each with its candidates)
    gradient_accumulation: int = 1
    learning_rate: float = 2e-5
    warmup: float = 0.1
    weight_decay: float = 0.01
    logging_steps: int = 10
    save_steps: int = 50
    save_total_limit: int = 1
    seed: int = 0
    threads: int | None = None
    bf16: bool = False

    def __post_init__(self) -> None:
        from personarag.evaluation.lamp_tasks import get_task

        self.task = get_task(self.task).name
        if self.target != TARGET:
            raise InputError(f"this config trains target {TARGET!r}, got target {self.target!r}")
        for name in ("output_dir", "questions", "outputs", "base"):
            if not getattr(self, name):
                raise InputError(f"give {name} (--{name.replace('_', '-')}): the personalized reranker needs it")
        if self.utility not in UTILITIES:
            raise InputError(f"utility must be one of {UTILITIES}, got {self.utility!r}")
        if self.utility == "llm" and not self.llm:
            raise InputError("utility=llm needs llm (--llm SPEC), the LLM whose feedback is distilled")
        if self.candidates < 2:
            raise InputError(f"candidates must be >= 2 (there is nothing to rank below that), got {self.candidates}")
        if self.max_train_queries is not None and (not isinstance(self.max_train_queries, int) or self.max_train_queries < 1):
            raise InputError(f"max_train_queries must be a positive integer or None, got {self.max_train_queries!r}")
        if not 0 < self.train_users <= 1:
            raise InputError(f"train_users is the fraction of users trained on, in (0, 1]; got {self.train_users}")
        if self.temperature <= 0:
            raise InputError(f"temperature must be > 0, got {self.temperature}")
        if self.fields is None:
            from personarag.generators.floors import LABEL_FIELD

            self.fields = [LABEL_FIELD[self.task]] if self.task in LABEL_FIELD else []

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def reranker_options(self) -> dict[str, Any]:
        """What `personal_reranker.json` keeps: the context the model was trained with."""
        return {"context_items": self.context_items, "max_length": self.max_length, "fields": list(self.fields or ()),
                "item_chars": self.item_chars, "candidate_chars": self.candidate_chars}


@dataclass(frozen=True)
class PersonalRerankerRun:
    output_dir: Path
    queries: int  # training examples with feedback
    trained_on: list[str]
    held_out: list[str]
    train_loss: float | None
    seconds: float


def split_users(examples: list[Any], fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """(training examples, held-out examples): the examples of a seeded `fraction` of the users, and the rest."""
    users = sorted({e.query.user.id for e in examples})
    random.Random(seed).shuffle(users)
    chosen = set(users[: max(1, round(fraction * len(users)))])
    return [e for e in examples if e.query.user.id in chosen], [e for e in examples if e.query.user.id not in chosen]


def utilities(config: PersonalRerankerRunConfig, docs: list[Any], query: Any, gold: str, llm: Any) -> list[float]:
    """Each candidate's utility for producing `gold` (see the module docstring)."""
    if config.utility == "label":
        from personarag.generators.floors import item_label

        return [label_utility(config.task, item_label(config.task, d), gold) for d in docs]
    prompts = [DEFAULT_TEMPLATE.format(document=d.full_text, query=query.text) for d in docs]
    return [float(s.logprobs[gold]) for s in llm.score(prompts, [gold])]


def collect(config: PersonalRerankerRunConfig, train: list[Any], path: Path, *, resume: bool) -> dict[str, dict[str, Any]]:
    """The feedback of every training example: {id: {"docs": [ids], "utilities": [...]}}, appended to `path` as it comes."""
    from tqdm.auto import tqdm

    from personarag.registry import build

    done = _read_feedback(path) if resume else {}
    if not resume:
        path.unlink(missing_ok=True)
    todo = [e for e in train if e.id not in done and e.gold is not None]
    logger.info("personalized reranker feedback: %d training examples, %d done before, %d to ask", len(train), len(done), len(todo))
    if not todo:
        return done
    retriever = build(config.first_stage, role="retriever")
    llm = None
    if config.utility == "llm":
        from personarag.llm import load_llm

        llm = load_llm(config.llm)
    for start in range(0, len(todo), 16):  # appended per chunk, so an interrupted run keeps what it asked
        chunk = todo[start : start + 16]
        rankings = retriever.retrieve([e.query for e in chunk], k=config.candidates)
        with path.open("a", encoding="utf-8") as handle:
            for example, ranking in zip(tqdm(chunk, desc="feedback", disable=not sys.stderr.isatty()), rankings):
                docs = [s.doc for s in ranking.docs]
                if len(docs) < 2:
                    continue
                row = {"docs": [d.id for d in docs], "utilities": utilities(config, docs, example.query, example.gold, llm)}
                done[example.id] = row
                handle.write(json.dumps({"id": example.id, **row}) + "\n")
    return done


def training_rows(config: PersonalRerankerRunConfig, train: list[Any], feedback: dict[str, dict[str, Any]]) -> dict[str, list[Any]]:
    """The dataset columns (query, docs, labels): pairs as the reranker builds them, soft targets as labels."""
    from personarag.personal.reranker import PersonalCrossEncoderReranker, candidate_text

    shape = PersonalCrossEncoderReranker(config.base, **config.reranker_options())  # builds texts; loads no model
    rows: dict[str, list[Any]] = {"query": [], "docs": [], "labels": []}
    for example in train:
        if example.id not in feedback:
            continue
        history = {d.id: d for d in example.query.user.history}
        row = feedback[example.id]
        missing = [i for i in row["docs"] if i not in history]
        if missing:
            raise InputError(f"{FEEDBACK}: example {example.id!r} names items {missing[:3]} that are not in its user's history; "
                             "the data changed since the feedback was collected: run again with --overwrite")
        rows["query"].append(shape.pair_query(example.query))
        rows["docs"].append([candidate_text(history[i], shape.fields, shape.candidate_chars) for i in row["docs"]])
        rows["labels"].append(soft_target(row["utilities"], config.temperature))
    if not rows["query"]:
        raise InputError("no training example has feedback (each needs a gold output and >= 2 candidates)")
    return rows


def run_personal_reranker(config: PersonalRerankerRunConfig, *, resume: bool = False, overwrite: bool = False) -> PersonalRerankerRun:
    require("sentence_transformers", "train", purpose="personalized reranker training")
    datasets = require("datasets", "train", purpose="personalized reranker training")
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments

    from personarag.evaluation.lamp import load_lamp
    from personarag.personal.reranker import CONFIG_FILE

    started = time.perf_counter()
    out = start_run(config, resume=resume, overwrite=overwrite)
    data = load_lamp(config.task, config.questions, config.outputs)
    train, held_out = split_users(list(data.examples), config.train_users, config.seed)
    if config.max_train_queries is not None and len(train) > config.max_train_queries:
        # the other examples of the training users are neither trained on nor held out (their users were seen)
        kept = set(random.Random(config.seed).sample(range(len(train)), config.max_train_queries))
        train = [e for i, e in enumerate(train) if i in kept]
    feedback = collect(config, train, out / FEEDBACK, resume=resume)
    rows = training_rows(config, train, feedback)
    model = CrossEncoder(config.base, num_labels=1, max_length=config.max_length)
    args = CrossEncoderTrainingArguments(**trainer_arguments(
        config, out, weight_decay=config.weight_decay, save_strategy="steps", save_steps=config.save_steps,
        eval_strategy="no", batch_sampler="batch_sampler",
    ))
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_dict(rows), loss=kl_loss(model))
    result, checkpoint = resume_training(trainer, out, resume=resume)
    model.save_pretrained(str(out))
    (out / CONFIG_FILE).write_text(json.dumps(config.reranker_options(), indent=2) + "\n", encoding="utf-8")
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    info = {
        "status": "finished", "queries": len(rows["query"]), "trained_on": [e.id for e in train],
        "held_out": [e.id for e in held_out], "train_loss": getattr(result, "training_loss", None), "losses": losses,
        "global_step": trainer.state.global_step, "resumed_from": checkpoint, "seconds": round(time.perf_counter() - started, 1),
    }
    common.write_run_file(out, info)
    _model_card(out, config, info, len(data))
    return PersonalRerankerRun(out, len(rows["query"]), info["trained_on"], info["held_out"], info["train_loss"], info["seconds"])


def _read_feedback(path: Path) -> dict[str, dict[str, Any]]:
    """The feedback of an interrupted run (a torn last line is dropped, the query asked again)."""
    from personarag.experiment.results_log import read_records

    return {qid: {"docs": row["docs"], "utilities": row["utilities"]} for qid, row in read_records(path).items()}


def _model_card(out: Path, config: PersonalRerankerRunConfig, info: dict[str, Any], total: int) -> None:
    source = f"`{config.llm}`'s log-likelihood of the gold output" if config.utility == "llm" else "the agreement of its label with the gold"
    lines = [
        "---", "library_name: sentence-transformers", "pipeline_tag: text-ranking",
        "tags: [cross-encoder, reranker, personarag, personalized]", "---",
        f"# personarag personalized reranker from `{config.base}`", "",
        f"Cross-encoder over (query + the user's {config.context_items} most similar history items, candidate), fields shown: "
        f"{list(config.fields or ())}. Trained on {info['queries']} examples ({len(info['trained_on'])} of the "
        f"{total} in `{config.questions}`, {config.task}: the users of a seeded {config.train_users:.0%} share"
        + (f", at most {config.max_train_queries} of their examples" if config.max_train_queries else "") + "); "
        f"the other {total - len(info['trained_on'])} examples were not used; the {len(info['held_out'])} of the "
        "other users are the held-out ones.",
        f"Target per example: softmax over its {config.first_stage} top-{config.candidates} candidates of their utility "
        f"({source}) / {config.temperature}; loss KL(target || model).",
        f"Steps {info['global_step']}, train loss {info['train_loss']}, {info['seconds']} s.", "",
        "Use it as the reranker spec:", "", f"    personal-cross-encoder:{out}", "",
        "## Config", "", "```json", json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str), "```", "",
        "## Versions", "", common.versions_markdown(common.library_versions()), "",
    ]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")
