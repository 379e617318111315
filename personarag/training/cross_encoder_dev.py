"""The dev side of cross-encoder training: candidates, the in-training evaluator, interpolation sweep.

Dev queries are reranked from the miner's top `dev_depth` and scored with the toolkit's own
metrics (`evaluation.metrics.evaluate`), so the numbers match `personarag eval beir`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from personarag.evaluation.qrels import Qrels
    from personarag.training.cross_encoder import CrossEncoderTrainConfig
    from personarag.types import Ranking

logger = logging.getLogger(__name__)

DEV_METRIC = "ndcg@10"


def dev_candidates(config: CrossEncoderTrainConfig, dev_qrels: Qrels) -> tuple[list[Ranking], Qrels]:
    from personarag import registry
    from personarag.evaluation.beir import load_beir

    data = load_beir(config.dataset_dir, split=config.dev_split or config.split)
    queries = [q for q in data.queries if q.id in dev_qrels]
    retriever = registry.build(config.miner, role="retriever")
    retriever.index(data.corpus)
    return retriever.retrieve(queries, k=config.dev_depth), dev_qrels


def make_evaluator(rankings: list[Ranking], qrels: Qrels, *, model_batch_size: int) -> Any:
    from sentence_transformers.base.evaluation import BaseEvaluator

    class DevRerankEvaluator(BaseEvaluator):
        """nDCG@10 (and MRR@10) of the model reranking first-stage candidates, by the toolkit's metrics."""

        def __init__(self) -> None:
            super().__init__()
            self.name = "dev"
            self.primary_metric = DEV_METRIC

        def __call__(self, model: Any, output_path: str | None = None, epoch: float = -1, steps: int = -1) -> dict:
            reranked = rerank_with_model(model, rankings, batch_size=model_batch_size)
            from personarag.evaluation.metrics import evaluate

            scores = evaluate(reranked, qrels, measures=("nDCG@10", "MRR@10")).aggregate
            metrics = {DEV_METRIC: scores["nDCG@10"], "mrr@10": scores["MRR@10"]}
            logger.info("dev at step %s: %s", steps, metrics)
            metrics = self.prefix_name_to_metrics(metrics, self.name)
            self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
            return metrics

    return DevRerankEvaluator()


def rerank_with_model(model: Any, rankings: list[Ranking], *, batch_size: int = 32) -> list[Ranking]:
    """Each ranking's documents reordered by the cross-encoder's scores (ids kept, ties by first-stage order)."""
    from personarag.types import ScoredDoc, StageTrace

    pairs = [(r.query.text, sd.doc.full_text) for r in rankings for sd in r.docs]
    scores = model.predict(pairs, batch_size=batch_size, show_progress_bar=False) if pairs else []
    out, position = [], 0
    for ranking in rankings:
        scored = []
        for rank, sd in enumerate(ranking.docs):
            scored.append((float(scores[position]), -rank, sd))
            position += 1
        scored.sort(key=lambda item: (item[0], item[1]), reverse=True)
        docs = [ScoredDoc(sd.doc, score) for score, _, sd in scored]
        out.append(ranking.with_stage(docs, StageTrace(stage="cross-encoder-dev")))
    return out


def first_stage_score(dev: tuple[list[Ranking], Qrels] | None) -> float | None:
    if not dev:
        return None
    from personarag.evaluation.metrics import evaluate

    return evaluate(dev[0], dev[1], measures=("nDCG@10",)).aggregate["nDCG@10"]


def interpolation_sweep(model: Any, dev: tuple[list[Ranking], Qrels], config: CrossEncoderTrainConfig) -> dict[str, Any]:
    """Dev nDCG@10 of the kept model's scores interpolated with the first stage's, per weight.

    The best weight is what `cross-encoder:PATH` takes as `first_stage_weight` when the model
    alone does not beat the first stage (one dev scoring pass; `rerankers.interpolation`).
    """
    from personarag.evaluation.metrics import evaluate
    from personarag.rerankers.interpolation import WEIGHT_GRID, interpolate_rankings

    rankings, qrels = dev
    reranked = rerank_with_model(model, rankings, batch_size=max(32, config.batch_size))
    grid = {}
    for weight in WEIGHT_GRID:
        fused = [r.with_stage(interpolate_rankings(r, rr, weight), rr.trace[-1]) for r, rr in zip(rankings, reranked)]
        grid[str(weight)] = evaluate(fused, qrels, measures=("nDCG@10",)).aggregate["nDCG@10"]
    best = max(grid, key=lambda w: (grid[w], -float(w)))
    return {"first_stage_weight": {"ndcg@10": grid, "best": float(best)}}
