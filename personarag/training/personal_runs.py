"""Training runs of the personal models on a LaMP split, as `personarag train user-encoder` and
`personarag train llm-feedback` run them: data from files, an output folder with the run file
(`personarag_training.json`), a README model card and resume.

- `run_user_encoder`: the contrastive user encoder (`personarag.training.user_encoder`) on
  the split's users. The item embeddings are saved in the folder (`item_embeddings.npz`),
  so a resumed run skips encoding; a finished run is returned as it is; the encoder itself
  has no checkpoints (it trains in seconds to minutes), so an unfinished one starts again.
  Loads as `collaborative:ITEM_MODEL` with `user_encoder=OUTPUT_DIR`.
- `run_llm_feedback`: the collaborative retriever's scorer distilled from LLM feedback
  (`personarag.training.llm_feedback`) on the first `max_queries` examples of the split
  (the others stay for evaluation; their ids are in the run file). The feedback of each
  query is appended to `feedback.jsonl` as it comes, so a resumed run asks the LLM only
  for the queries not done yet. Loads as `collaborative:MODEL` with `scorer=OUTPUT_DIR`.

The configs extend the library's training configs with the data fields, so every option
is one field, one flag, one YAML key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from personarag.errors import InputError
from personarag.training import common
from personarag.training.llm_feedback import FeedbackTrainConfig
from personarag.training.trainer import start_run
from personarag.training.user_encoder import UserEncoderTrainConfig

logger = logging.getLogger(__name__)

EMBEDDINGS = "item_embeddings.npz"
FEEDBACK = "feedback.jsonl"


@dataclass
class UserEncoderRunConfig(UserEncoderTrainConfig):
    """`UserEncoderTrainConfig` plus the data: a LaMP split's questions file (`task`, `questions`)."""

    task: str = "LaMP-3"
    questions: str = ""
    max_users: int | None = None  # the first N distinct users (None: all)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_data(self.task, self.questions)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class UserEncoderRun:
    output_dir: Path
    users: int
    losses: list[float]
    seconds: float
    reused: bool  # a finished run found in the folder


def run_user_encoder(config: UserEncoderRunConfig, *, resume: bool = False, overwrite: bool = False) -> UserEncoderRun:
    from personarag.evaluation.lamp import load_lamp
    from personarag.training.user_encoder import encode_histories, train_user_encoder

    started = time.perf_counter()
    finished = _finished(config.output_dir) if resume else None
    out = start_run(config, resume=resume, overwrite=overwrite)
    if finished is not None:
        common.write_run_file(out, finished)
        return UserEncoderRun(out, finished["users"], finished["losses"], time.perf_counter() - started, True)
    users = load_lamp(config.task, config.questions).users
    users = users[: config.max_users] if config.max_users else users
    cached = out / EMBEDDINGS
    ids = [f"{u.id}\t{len(u.history)}" for u in users]
    embeddings = None
    if cached.is_file():
        with np.load(cached, allow_pickle=False) as saved:
            if saved["item_model"].item() == config.item_model and saved["ids"].tolist() == ids:
                embeddings = [saved[f"u{i}"] for i in range(len(users))]
                logger.info("reusing the item embeddings in %s", cached)
    if embeddings is None:
        logger.info("encoding %d history items of %d users with %s", sum(len(u.history) for u in users), len(users), config.item_model)
        embeddings = encode_histories(users, config.item_model, config.item_batch_size)
        np.savez(cached, item_model=np.array(config.item_model), ids=np.array(ids),
                 **{f"u{i}": e for i, e in enumerate(embeddings)})
    train_user_encoder(users, config, item_embeddings=embeddings)
    saved = json.loads((out / "config.json").read_text(encoding="utf-8"))
    info = {"status": "finished", "users": saved["users"], "losses": saved["losses"]}
    common.write_run_file(out, info)
    _model_card(out, "user encoder", config, [
        f"Contrastive user encoder (CFRAG, after CL4SRec) trained on the {saved['users']} users with a history "
        f"in `{config.questions}` ({config.task}), item embeddings from `{config.item_model}`.",
        f"InfoNCE per epoch: first {saved['losses'][0]:.4f}, last {saved['losses'][-1]:.4f}.",
        "", "Use it for the similar-user search of the collaborative retriever:", "",
        f"    collaborative:{config.item_model}  with  user_encoder={out}",
    ])
    return UserEncoderRun(out, saved["users"], saved["losses"], time.perf_counter() - started, False)


@dataclass
class LLMFeedbackRunConfig(FeedbackTrainConfig):
    """`FeedbackTrainConfig` plus the data, the LLM, the collaborative retriever and the run's folder."""

    output_dir: str = ""
    task: str = "LaMP-3"
    questions: str = ""
    outputs: str = ""
    llm: Any = ""  # an LLM spec string, or {spec, params}
    model: str = "sentence-transformers/all-MiniLM-L6-v2"  # the retriever's sentence encoder
    m: int = 4
    alpha: float = 0.5
    relevance: str = "dense"
    user_encoder: str | None = None
    candidates: int = 10
    max_queries: int | None = None  # train on the first N examples (None: all); the rest are for evaluation
    store: str | None = None  # a user store (path or URL) the split's users are imported into: item embeddings cached there
    threads: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_data(self.task, self.questions)
        if not self.output_dir:
            raise InputError("give output_dir (--output-dir): the folder the scorer is written to")
        if not self.outputs:
            raise InputError("give outputs (--outputs): the gold outputs file; the LLM scores the gold output with each candidate")
        if not self.llm:
            raise InputError("give llm (--llm SPEC), e.g. transformers:PATH: the LLM whose feedback is distilled")
        if self.candidates < 2:
            raise InputError(f"candidates must be >= 2 (there is nothing to rank below that), got {self.candidates}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class LLMFeedbackRun:
    output_dir: Path
    scorer: Path
    queries: int  # queries with feedback
    trained_on: list[str]  # example ids used for training
    initial: list[float]
    weights: list[float]
    seconds: float


def run_llm_feedback(config: LLMFeedbackRunConfig, *, resume: bool = False, overwrite: bool = False) -> LLMFeedbackRun:
    from personarag.evaluation.lamp import load_lamp
    from personarag.personal.collaborative import CollaborativeRetriever, save_scorer
    from personarag.training.llm_feedback import train_scorer

    started = time.perf_counter()
    out = start_run(config, resume=resume, overwrite=overwrite)
    data = load_lamp(config.task, config.questions, config.outputs)
    train = data.examples[: config.max_queries] if config.max_queries else data.examples
    retriever = CollaborativeRetriever(config.model, m=config.m, alpha=config.alpha, relevance=config.relevance,
                                       user_encoder=config.user_encoder)
    with contextlib.ExitStack() as resources:
        if config.store:
            from personarag.personal.store import UserStore

            store = resources.enter_context(UserStore(config.store))
            store.add_users(data.users)  # unchanged users stay as they are: their cached embeddings are reused
            retriever.bind_store(store)
        else:
            retriever.fit_users(data.users)
        initial = retriever.weights.copy()
        feedback = _ask_feedback(config, out, retriever, train, resume)
    options = {f.name: getattr(config, f.name) for f in dataclasses.fields(FeedbackTrainConfig)}
    weights = train_scorer(feedback, initial, FeedbackTrainConfig(**options))
    trained_on = [e.id for e in train]
    scorer = save_scorer(out / "scorer.json", weights, {
        "initial_weights": initial.tolist(), "llm": config.llm, "item_model": config.model, "queries": len(feedback),
        "trained_on": trained_on, "training": config.to_dict(), "versions": common.library_versions(),
    })
    common.write_run_file(out, {"status": "finished", "queries": len(feedback), "trained_on": trained_on,
                                "weights": weights.tolist(), "initial_weights": initial.tolist()})
    held_out = len(data) - len(train)
    _model_card(out, "collaborative scorer", config, [
        f"Feature weights of the collaborative retriever ({', '.join(_features())}) distilled from the feedback of "
        f"`{config.llm}` on the first {len(train)} examples of `{config.questions}` ({config.task}; {len(feedback)} with "
        f"feedback); the other {held_out} examples were not used.",
        f"Weights: initial {np.round(initial, 4).tolist()}, trained {np.round(weights, 4).tolist()}.",
        "", "Use it as:", "", f"    collaborative:{config.model}  with  scorer={out}",
    ])
    return LLMFeedbackRun(out, scorer, len(feedback), trained_on, initial.tolist(), weights.tolist(), time.perf_counter() - started)


def _ask_feedback(config: LLMFeedbackRunConfig, out: Path, retriever: Any, train: list[Any], resume: bool) -> list[Any]:
    """The LLM's feedback on every training query, appended to the run folder per chunk so a killed run keeps it."""
    from personarag.llm import load_llm
    from personarag.training.llm_feedback import collect_feedback

    path = out / FEEDBACK
    done = _read_feedback(path) if resume else {}
    if not resume:
        path.unlink(missing_ok=True)
    todo = [e for e in train if e.id not in done]
    logger.info("llm feedback: %d training queries, %d done before, %d to ask", len(train), len(done), len(todo))
    if todo:
        llm = load_llm(config.llm)
        golds = {e.id: e.gold for e in todo if e.gold is not None}
        for start in range(0, len(todo), 16):  # appended per chunk, so an interrupted run keeps what it asked
            chunk = [e.query for e in todo[start : start + 16]]
            with path.open("a", encoding="utf-8") as handle:
                for f in collect_feedback(retriever, chunk, golds, llm, candidates=config.candidates):
                    done[f.query_id] = f
                    handle.write(json.dumps({"id": f.query_id, "docs": list(f.doc_ids), "features": f.features.tolist(),
                                             "llm_scores": [float(s) for s in f.llm_scores]}) + "\n")
            logger.info("llm feedback: %d / %d queries", min(start + 16, len(todo)), len(todo))
    return [done[e.id] for e in train if e.id in done]


def _read_feedback(path: Path) -> dict[str, Any]:
    """The feedback of an interrupted run (a torn last line is dropped, the query asked again)."""
    from personarag.experiment.results_log import read_records
    from personarag.training.llm_feedback import Feedback

    return {qid: Feedback(qid, tuple(row["docs"]), np.asarray(row["features"], dtype=np.float64),
                          np.asarray(row["llm_scores"], dtype=np.float64))
            for qid, row in read_records(path).items()}


def _features() -> tuple[str, ...]:
    from personarag.personal.collaborative import FEATURES

    return FEATURES


def _check_data(task: str, questions: str) -> None:
    from personarag.evaluation.lamp_tasks import get_task

    get_task(task)
    if not questions:
        raise InputError("give questions (--questions): a LaMP questions file, e.g. dev_questions.json")


def _finished(output_dir: str) -> dict[str, Any] | None:
    """The run file of a finished user-encoder run in `output_dir`, or None."""
    path = Path(output_dir) / common.RUN_FILE
    if not path.is_file() or not (Path(output_dir) / "model.safetensors").is_file():
        return None
    info = json.loads(path.read_text(encoding="utf-8"))
    return info if info.get("status") == "finished" else None


def _model_card(out: Path, what: str, config: Any, body: list[str]) -> None:
    lines = [f"# personarag {what}", "", *body, "", "## Config", "", "```json",
             json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str), "```", "",
             "## Versions", "", common.versions_markdown(common.library_versions()), ""]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")
