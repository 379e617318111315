"""LLM-feedback distillation for the collaborative retriever (CFRAG's retriever fine-tuning).

For each training query, the retriever's top candidates are each put into a prompt alone, and
the LLM scores the gold output given that prompt (`LLM.score(prompts, [gold])`, a
log-likelihood). Those scores, softened by `llm_temperature`, are the target distribution
over the candidates; the retriever's distribution is a softmax of its scores
(`weights · features`, see `personarag.personal.collaborative.FEATURES`) over
`retriever_temperature`. The weights are trained to minimise KL(target || retriever), so
documents that help the LLM produce the gold output move up.

    feedback = collect_feedback(retriever, queries, golds, llm)
    weights = train_scorer(feedback, retriever.weights, FeedbackTrainConfig())
    retriever.set_weights(weights); save_scorer(path, weights)
or all at once: `distill_llm_feedback(retriever, queries, golds, llm, "models/cfrag/scorer.json")`,
then `CollaborativeRetriever(..., scorer="models/cfrag/scorer.json")`.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from personarag.errors import InputError, require
from personarag.training import common
from personarag.types import Document, Query

if TYPE_CHECKING:
    from personarag.llm.base import LLM
    from personarag.personal.collaborative import CollaborativeRetriever

logger = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "Here is a text from a user's history or from a similar user's history:\n{document}\n\n{query}"


@dataclass(frozen=True)
class Feedback:
    """One query's candidates: their features and the LLM's log-likelihood of the gold output with each."""

    query_id: str
    doc_ids: tuple[str, ...]
    features: np.ndarray
    llm_scores: np.ndarray


@dataclass
class FeedbackTrainConfig:
    epochs: int = 200
    learning_rate: float = 0.05
    llm_temperature: float = 1.0
    retriever_temperature: float = 0.1
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.llm_temperature <= 0 or self.retriever_temperature <= 0 or self.epochs < 1:
            raise InputError("temperatures must be > 0 and epochs >= 1")


def collect_feedback(
    retriever: CollaborativeRetriever,
    queries: Sequence[Query],
    golds: Mapping[str, str],
    llm: LLM,
    *,
    candidates: int = 10,
    template: str = DEFAULT_TEMPLATE,
    prompt: Callable[[Query, Document], Any] | None = None,
) -> list[Feedback]:
    """LLM scores of the gold output with each of each query's top `candidates` documents.

    `prompt(query, doc)` builds the prompt (a string or chat) when given; otherwise `template`
    with `{document}` and `{query}`. Queries without a gold or with fewer than two candidates
    (nothing to rank) are skipped."""
    from tqdm.auto import tqdm

    missing = [q.id for q in queries if q.id not in golds]
    if missing:
        logger.warning("llm feedback: %d queries have no gold output and are skipped (e.g. %s)", len(missing), missing[:3])
    out = []
    for cands in tqdm(retriever.candidates([q for q in queries if q.id in golds]), desc="llm feedback",
                      disable=not sys.stderr.isatty()):
        if len(cands.docs) < 2:
            continue
        top = np.argsort(-retriever.score(cands.features), kind="stable")[:candidates]
        docs = [cands.docs[i] for i in top.tolist()]
        if prompt is not None:
            prompts = [prompt(cands.query, d) for d in docs]
        else:
            prompts = [template.format(document=d.full_text, query=cands.query.text) for d in docs]
        gold = golds[cands.query.id]
        scores = llm.score(prompts, [gold])
        out.append(Feedback(cands.query.id, tuple(d.id for d in docs), cands.features[top],
                            np.asarray([s.logprobs[gold] for s in scores], dtype=np.float64)))
    return out


def train_scorer(feedback: Sequence[Feedback], initial: Sequence[float], config: FeedbackTrainConfig | None = None) -> np.ndarray:
    """Feature weights minimising the mean KL(LLM distribution || retriever distribution)."""
    torch = require("torch", "train", purpose="LLM-feedback training")
    config = config or FeedbackTrainConfig()
    if not feedback:
        raise InputError("no feedback to train on (every query was skipped: no gold or < 2 candidates)")
    torch.manual_seed(config.seed)
    weights = torch.tensor(np.asarray(initial, dtype=np.float64), requires_grad=True)
    optimizer = torch.optim.Adam([weights], lr=config.learning_rate, weight_decay=config.weight_decay)
    feats = [torch.from_numpy(np.asarray(f.features, dtype=np.float64)) for f in feedback]
    targets = []
    for f in feedback:
        scores = torch.from_numpy(f.llm_scores)
        if not torch.isfinite(scores).any():
            raise InputError(f"query {f.query_id!r}: the LLM gave the gold output probability 0 with every document")
        targets.append(torch.softmax(scores / config.llm_temperature, dim=0))
    for _ in range(config.epochs):
        optimizer.zero_grad()
        loss = torch.stack([
            torch.nn.functional.kl_div(torch.log_softmax(x @ weights / config.retriever_temperature, dim=0), p,
                                       reduction="sum")
            for x, p in zip(feats, targets)
        ]).mean()
        loss.backward()
        optimizer.step()
    logger.info("llm feedback: final KL %.4f over %d queries", float(loss.detach()), len(feedback))
    return weights.detach().numpy().copy()


def distill_llm_feedback(
    retriever: CollaborativeRetriever,
    queries: Sequence[Query],
    golds: Mapping[str, str],
    llm: LLM,
    output: str | Path,
    *,
    candidates: int = 10,
    template: str = DEFAULT_TEMPLATE,
    config: FeedbackTrainConfig | None = None,
) -> Path:
    """Collect feedback, train the weights, set them on `retriever` and save them to `output`."""
    from personarag.personal.collaborative import save_scorer

    config = config or FeedbackTrainConfig()
    feedback = collect_feedback(retriever, queries, golds, llm, candidates=candidates, template=template)
    before = retriever.weights.copy()
    weights = train_scorer(feedback, before, config)
    retriever.set_weights(weights)
    return save_scorer(output, weights, {
        "initial_weights": before.tolist(),
        "llm": llm.model_name,
        "item_model": retriever.model,
        "queries": len(feedback),
        "candidates": candidates,
        "training": dataclasses.asdict(config),
        "versions": common.library_versions(),
    })
