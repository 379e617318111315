"""Interpolating a reranker's scores with the first stage's: (1 - w) * mm(reranker) + w * mm(first stage).

Both score lists are min-max normalised per query over the reranked candidates (all equal -> 1),
as in the BM25 interpolation studies of Wang et al. (ICTIR 2021) and Lin et al. ("Pretrained
Transformers for Text Ranking", section 3.2.4). A weak or out-of-domain reranker keeps the
lexical signal it misses; w = 0 is the reranker alone, w = 1 the first stage alone. Pick w on
dev queries (`training.cross_encoder_dev.interpolation_sweep`), never on the test queries.
"""

from __future__ import annotations

from collections.abc import Sequence

from personarag.errors import InputError
from personarag.retrievers.fusion import minmax
from personarag.types import Ranking, ScoredDoc

WEIGHT_GRID = tuple(round(0.1 * i, 1) for i in range(11))


def check_weight(weight: float) -> float:
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= weight <= 1.0:
        raise InputError(f"first_stage_weight must be a number in [0, 1], got {weight!r}")
    return float(weight)


def interpolate(first_stage: Sequence[float], reranker: Sequence[float], weight: float) -> list[float]:
    """Per-candidate fused scores; both lists are in the same candidate order."""
    if len(first_stage) != len(reranker):
        raise InputError(f"{len(first_stage)} first-stage scores but {len(reranker)} reranker scores")
    weight = check_weight(weight)
    return [(1.0 - weight) * r + weight * f for f, r in zip(minmax(first_stage), minmax(reranker))]


def interpolate_rankings(first_stage: Ranking, reranked: Ranking, weight: float) -> list[ScoredDoc]:
    """`reranked`'s documents re-sorted by the fused score (stable: ties keep the first-stage order).

    Every reranked document must be among the first stage's; documents the reranker did not
    see are not added.
    """
    position = {sd.id: i for i, sd in enumerate(first_stage.docs)}
    missing = [sd.id for sd in reranked.docs if sd.id not in position]
    if missing:
        raise InputError(f"query {reranked.query.id}: reranked documents {missing[:5]} are not in the first-stage ranking")
    docs = sorted(reranked.docs, key=lambda sd: position[sd.id])
    fused = interpolate([first_stage.docs[position[sd.id]].score for sd in docs], [sd.score for sd in docs], weight)
    order = sorted(range(len(docs)), key=lambda i: -fused[i])
    return [ScoredDoc(docs[i].doc, fused[i], docs[i].reasoning) for i in order]
