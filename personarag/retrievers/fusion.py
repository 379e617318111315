"""Hybrid retrieval: fuse the rankings of several retrievers.

- `rrf:A+B` (FusionRetriever): reciprocal rank fusion, score(d) = sum_i w_i / (rank_constant + rank_i(d)),
  ranks from 1; a part that did not return d adds nothing (Cormack et al., 2009; constant 60).
- `wsum:A+B` (WeightedFusionRetriever): sum_i w_i * norm_i(score_i(d)), each part's scores
  normalised per query: "minmax" maps them to [0, 1] (all equal -> 1) and a document the part
  did not return gets 0; "zscore" uses (s - mean) / std (all equal -> 0) and a missing document
  gets the part's lowest z-score.

Parts are given as a list (Retrievers, spec strings or configs) or one string "A+B" split on
'+' (so a part's own spec cannot contain '+'; nest fusions with a list). Each part retrieves
`depth` documents per query (default max(k, 100)) before fusion. Ties in the fused score go
to the document with the better best rank, then to the one met first (parts in order).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from personarag import registry
from personarag.errors import InputError
from personarag.retrievers.base import Retriever
from personarag.types import Corpus, Document, Query, Ranking, ScoredDoc, StageTrace

NORMALIZATIONS = ("minmax", "zscore")


def minmax(scores: Sequence[float]) -> list[float]:
    """The toolkit's one min-max normalisation, per query: (s - min) / (max - min) in [0, 1].

    All finite scores equal -> each is 1 (a part that cannot tell its candidates apart gives
    them full credit, so they stay above documents it did not return, which count 0); a
    non-finite score (nan, +-inf) -> 0 and is left out of min and max. Used by `wsum:` fusion,
    history retrieval's `wsum:` parts, the collaborative retriever's BM25 relevance and
    reranker interpolation. Takes any sequence of numbers, numpy arrays included.
    """
    finite = [s for s in scores if math.isfinite(s)]
    if not finite:
        return [0.0] * len(scores)
    low, high = min(finite), max(finite)
    if high == low:
        return [1.0 if math.isfinite(s) else 0.0 for s in scores]
    return [(s - low) / (high - low) if math.isfinite(s) else 0.0 for s in scores]


def parse_parts(retrievers: str | Sequence[str | Retriever | Mapping[str, Any]]) -> list[Retriever]:
    if isinstance(retrievers, str):
        specs: list[Any] = [part.strip() for part in retrievers.split("+")]
        if any(not part for part in specs):
            raise InputError(f"fusion spec {retrievers!r} has an empty part; expected 'A+B', e.g. 'bm25+dense:MODEL'")
    elif isinstance(retrievers, Sequence):
        specs = list(retrievers)
    else:
        raise InputError(f"retrievers must be a list of retrievers/specs or a string 'A+B', got {type(retrievers).__name__}")
    if len(specs) < 2:
        raise InputError(f"fusion needs at least two retrievers, got {len(specs)}: {retrievers!r}")
    return [registry.build(spec, role="retriever") for spec in specs]  # type: ignore[misc]


def check_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0] * n
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence) or len(weights) != n:
        raise InputError(f"weights must be a list of {n} numbers (one per retriever), got {weights!r}")
    out = []
    for weight in weights:
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise InputError(f"weights must be finite non-negative numbers, got {weights!r}")
        out.append(float(weight))
    if not any(out):
        raise InputError(f"at least one weight must be positive, got {weights!r}")
    return out


class _Fusion(Retriever):
    """Shared parts handling; subclasses define `_combine`."""

    def _setup(self, retrievers: Any, weights: Sequence[float] | None, depth: int | None) -> None:
        self.retrievers = parse_parts(retrievers)
        self.weights = check_weights(weights, len(self.retrievers))
        if depth is not None and (not isinstance(depth, int) or isinstance(depth, bool) or depth < 1):
            raise InputError(f"depth must be a positive integer or None (max(k, 100)), got {depth!r}")
        self.depth = depth
        self.needs_corpus = any(part.needs_corpus for part in self.retrievers)  # type: ignore[misc]

    def config(self) -> dict[str, Any]:
        config = super().config()
        config["params"]["retrievers"] = [part.config() for part in self.retrievers]
        return config

    def _index(self, corpus: Corpus) -> None:
        for part in self.retrievers:
            if part.needs_corpus:  # user-history parts take their candidates from each query
                part.index(corpus)

    def _retrieve(self, queries: list[Query], k: int) -> list[Ranking]:
        depth = self.depth if self.depth is not None else max(k, 100)
        per_part = [part.retrieve(queries, k=depth) for part in self.retrievers]
        names = [part.spec_name for part in self.retrievers]
        out = []
        for position, query in enumerate(queries):
            lists = [rankings[position] for rankings in per_part]
            for name, ranking in zip(names, lists):
                if ranking.query.id != query.id:
                    raise InputError(f"part {name!r} answered query {ranking.query.id!r} where {query.id!r} was asked")
            docs: dict[str, Document] = {}
            ranks: dict[str, list[int | None]] = {}
            for part_index, ranking in enumerate(lists):
                for rank, scored in enumerate(ranking.docs, 1):
                    if scored.id not in docs:
                        docs[scored.id] = scored.doc
                        ranks[scored.id] = [None] * len(lists)
                    if ranks[scored.id][part_index] is None:  # a duplicate id keeps its best rank
                        ranks[scored.id][part_index] = rank
            fused = self._combine(lists, ranks)
            seen = {doc_id: order for order, doc_id in enumerate(docs)}
            best = {doc_id: min(r for r in rs if r is not None) for doc_id, rs in ranks.items()}
            order = sorted(docs, key=lambda d: (-fused[d], best[d], seen[d]))[:k]
            trace = StageTrace(
                self.spec_name,
                info={"parts": names, "depth": depth, "ranks": {doc_id: ranks[doc_id] for doc_id in order}},
            )
            part_traces = tuple(t for ranking in lists for t in ranking.trace)
            out.append(Ranking(query, [ScoredDoc(docs[d], fused[d]) for d in order], part_traces + (trace,)))
        return out

    def _combine(self, lists: list[Ranking], ranks: dict[str, list[int | None]]) -> dict[str, float]:
        raise NotImplementedError


class FusionRetriever(_Fusion):
    """Reciprocal rank fusion of two or more retrievers: `rrf:bm25+dense:MODEL`."""

    spec_name: ClassVar[str] = "rrf"

    def __init__(
        self,
        retrievers: str | Sequence[str | Retriever | Mapping[str, Any]],
        *,
        rank_constant: float = 60,
        weights: Sequence[float] | None = None,
        depth: int | None = None,
    ) -> None:
        if isinstance(rank_constant, bool) or not isinstance(rank_constant, (int, float)) or not rank_constant >= 0:
            raise InputError(f"rank_constant must be a non-negative number, got {rank_constant!r}")
        self.rank_constant = float(rank_constant)
        self._setup(retrievers, weights, depth)

    def _combine(self, lists: list[Ranking], ranks: dict[str, list[int | None]]) -> dict[str, float]:
        return {
            doc_id: sum(w / (self.rank_constant + r) for w, r in zip(self.weights, doc_ranks) if r is not None)
            for doc_id, doc_ranks in ranks.items()
        }


class WeightedFusionRetriever(_Fusion):
    """Weighted sum of per-query normalised scores: `wsum:bm25+dense:MODEL`."""

    spec_name: ClassVar[str] = "wsum"

    def __init__(
        self,
        retrievers: str | Sequence[str | Retriever | Mapping[str, Any]],
        *,
        weights: Sequence[float] | None = None,
        normalization: str = "minmax",
        depth: int | None = None,
    ) -> None:
        if normalization not in NORMALIZATIONS:
            raise InputError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {normalization!r}")
        self.normalization = normalization
        self._setup(retrievers, weights, depth)

    def _normalise(self, ranking: Ranking) -> tuple[dict[str, float], float]:
        """(doc id -> normalised score, the value of a document this part did not return)."""
        scores: dict[str, float] = {}
        for scored in ranking.docs:
            if scored.id not in scores and math.isfinite(scored.score):
                scores[scored.id] = scored.score
        if not scores:
            return {}, 0.0
        values = list(scores.values())
        if self.normalization == "minmax":
            return dict(zip(scores, minmax(values))), 0.0
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        if std == 0:
            return {d: 0.0 for d in scores}, 0.0
        normalised = {d: (s - mean) / std for d, s in scores.items()}
        return normalised, min(normalised.values())

    def _combine(self, lists: list[Ranking], ranks: dict[str, list[int | None]]) -> dict[str, float]:
        fused = dict.fromkeys(ranks, 0.0)
        for weight, ranking in zip(self.weights, lists):
            normalised, missing = self._normalise(ranking)
            for doc_id in fused:
                fused[doc_id] += weight * normalised.get(doc_id, missing)
        return fused
