"""The reranker interface: reorder each query's candidates, keeping reasoning and usage."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from personarag.component import Component
from personarag.errors import InputError
from personarag.types import Ranking


class Reranker(Component):
    role: ClassVar[str] = "reranker"

    def rerank(self, rankings: Sequence[Ranking] | Ranking, depth: int | None = None) -> list[Ranking]:
        """Rerank the top `depth` candidates of each ranking (all when None); the rest keep their order below."""
        batch = [rankings] if isinstance(rankings, Ranking) else list(rankings)
        for position, ranking in enumerate(batch):
            if not isinstance(ranking, Ranking):
                raise InputError(f"rankings[{position}] is a {type(ranking).__name__}, expected Ranking")
        if depth is not None and (not isinstance(depth, int) or depth < 1):
            raise InputError(f"depth must be a positive integer or None, got {depth!r}")
        if not batch:
            return []
        heads = [r if depth is None else r.top(depth) for r in batch]
        reranked = self._rerank(heads)
        if depth is None:
            return reranked
        out = []
        for original, head in zip(batch, reranked):
            tail = original.docs[depth:]
            out.append(Ranking(query=head.query, docs=head.docs + tail, trace=head.trace))
        return out

    @abstractmethod
    def _rerank(self, rankings: list[Ranking]) -> list[Ranking]: ...
