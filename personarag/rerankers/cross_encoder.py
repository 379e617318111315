"""Cross-encoder reranking with sentence-transformers' CrossEncoder.

Every (query, document) pair of a batch of queries goes to one `predict` call; the
candidates of each query are then sorted by the model's score (stable: ties keep the
input order). The document side is the title and body (`Document.full_text`).
With `first_stage_weight` w > 0 the order is by (1 - w) * minmax(model) + w * minmax(first
stage) per query (`rerankers.interpolation`), and that fused value is the score.
"""

from __future__ import annotations

import logging
from typing import Any

from personarag.errors import InputError, require
from personarag.llm.stage import positive_int
from personarag.rerankers.base import Reranker, check_depth
from personarag.rerankers.interpolation import check_weight, interpolate
from personarag.types import Ranking, ScoredDoc, StageTrace

logger = logging.getLogger(__name__)

ACTIVATIONS = ("default", "sigmoid", "identity")


class CrossEncoderReranker(Reranker):
    """`model`: a hub name or a local folder (e.g. a model fine-tuned by `personarag.training`).

    `activation`: "default" keeps the model's own (sigmoid for one-label models saved
    by sentence-transformers), "sigmoid" or "identity" (raw logits) override it;
    the order is the same for any monotone activation. `depth`: this stage's own depth
    (see Reranker).
    """

    spec_name = "cross-encoder"

    def __init__(
        self,
        model: str,
        *,
        batch_size: int = 32,
        max_length: int | None = 512,
        device: str | None = None,
        activation: str = "default",
        show_progress_bar: bool | None = None,
        first_stage_weight: float = 0.0,
        depth: int | None = None,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise InputError(f"model must be a hub name or a local path, got {model!r}")
        self.model_name = model
        self.batch_size = positive_int("batch_size", batch_size)
        self.max_length = None if max_length is None else positive_int("max_length", max_length)
        if activation not in ACTIVATIONS:
            raise InputError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.activation = activation
        self.device = device
        self.show_progress_bar = show_progress_bar
        self.first_stage_weight = check_weight(first_stage_weight)
        self.depth = check_depth(depth)
        self._model: Any = None

    @property
    def model(self) -> Any:
        if self._model is None:
            st = require("sentence_transformers", "dense", purpose="cross-encoder reranking")
            kwargs: dict[str, Any] = {"device": self.device}
            if self.max_length is not None:
                kwargs["max_length"] = self.max_length
            if self.activation != "default":
                torch = require("torch", "dense")
                kwargs["activation_fn"] = torch.nn.Sigmoid() if self.activation == "sigmoid" else torch.nn.Identity()
            self._model = st.CrossEncoder(self.model_name, **kwargs)
        return self._model

    def _pairs(self, rankings: list[Ranking]) -> list[tuple[str, str]]:
        """The (query side, document side) texts the model scores, in ranking then candidate order."""
        return [(r.query.text, s.doc.full_text) for r in rankings for s in r.docs]

    def _info(self, ranking: Ranking) -> dict[str, Any]:
        return {"model": self.model_name}

    def _rerank(self, rankings: list[Ranking]) -> list[Ranking]:
        pairs = self._pairs(rankings)
        scores: list[float] = []
        if pairs:
            predicted = self.model.predict(pairs, batch_size=self.batch_size, show_progress_bar=self.show_progress_bar)
            scores = [float(x) for x in predicted]
        out, start = [], 0
        for ranking in rankings:
            own = scores[start : start + len(ranking.docs)]
            start += len(ranking.docs)
            info = self._info(ranking)
            if self.first_stage_weight:  # the candidates arrive in first-stage order
                info["first_stage_weight"] = self.first_stage_weight
                own = interpolate([sd.score for sd in ranking.docs], own, self.first_stage_weight)
            order = sorted(range(len(own)), key=lambda i: -own[i])
            docs = [ScoredDoc(ranking.docs[i].doc, own[i]) for i in order]
            out.append(ranking.with_stage(docs, StageTrace(self.spec_name, info=info)))
        return out
