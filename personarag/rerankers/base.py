"""The reranker interface: reorder each query's candidates, keeping reasoning and usage."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from personarag.component import Component
from personarag.errors import InputError
from personarag.types import Document, Query, Ranking, ScoredDoc


def check_depth(depth: object) -> int | None:
    if depth is not None and (not isinstance(depth, int) or isinstance(depth, bool) or depth < 1):
        raise InputError(f"depth must be a positive integer or None, got {depth!r}")
    return depth  # type: ignore[return-value]


class Reranker(Component):
    """Reorders each query's candidates.

    `depth` is the stage's own depth: how many of the top candidates it reranks (None: all).
    A Pipeline passes its `rerank_depth` to the stages that carry no depth of their own, so
    a cross-encoder can rerank 100 candidates and a listwise LLM then the top 20 of those.
    """

    role: ClassVar[str] = "reranker"
    depth: int | None = None

    def rerank(self, rankings: Sequence[Ranking] | Ranking, depth: int | None = None) -> list[Ranking]:
        """Rerank the top `depth` candidates of each ranking (None: the stage's own depth; all when
        that is None too); the rest keep their order below."""
        batch = [rankings] if isinstance(rankings, Ranking) else list(rankings)
        for position, ranking in enumerate(batch):
            if not isinstance(ranking, Ranking):
                raise InputError(f"rankings[{position}] is a {type(ranking).__name__}, expected Ranking")
        depth = check_depth(self.depth if depth is None else depth)
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

    def rank(self, query: str, documents: Sequence[str | Document], depth: int | None = None) -> Ranking:
        """One query against plain texts (or Documents): the Ranking, best first.

        For using a reranker on its own: `ranking.ids`, and per entry `doc.text` and `score`.
        Texts get the ids "0", "1", ... in the order given (which is the input order the
        rerankers keep on ties).
        """
        if not isinstance(query, str):
            raise InputError(f"query must be a string, got {type(query).__name__}")
        if isinstance(documents, (str, Document)):
            raise InputError("documents must be a list of texts or Documents, got a single one")
        docs = []
        for position, item in enumerate(documents):
            if isinstance(item, str):
                item = Document(id=str(position), text=item)
            elif not isinstance(item, Document):
                raise InputError(f"documents[{position}] is a {type(item).__name__}, expected a string or a Document")
            docs.append(ScoredDoc(item, 0.0))
        return self.rerank(Ranking(query=Query(id="q0", text=query), docs=tuple(docs)), depth=depth)[0]

    @abstractmethod
    def _rerank(self, rankings: list[Ranking]) -> list[Ranking]: ...
