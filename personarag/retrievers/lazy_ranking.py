"""Rankings whose ScoredDocs are built on first use.

A retriever at depth 1000 returns 300,000 hits for 300 queries; building a ScoredDoc for each
(and the GC's pass over them) took longer than BM25's search itself, while many callers read
only ids or the top few. `LazyRanking` keeps corpus positions and scores until `docs` is read.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Any

import numpy as np

from personarag.types import Document, Query, Ranking, ScoredDoc, StageTrace

Batch = list["weakref.ref[LazyRanking]"]


@dataclass(frozen=True)
class _Pending:
    documents: Sequence[Document]  # the corpus, by position
    ids: Sequence[str]  # its ids, by position
    positions: np.ndarray
    scores: np.ndarray
    batch: Batch  # the rankings made together (weakly: the batch keeps none alive)


class LazyRanking(Ranking):
    """A `Ranking` whose `docs` are built on first use from corpus positions and scores.

    It behaves as the Ranking with those docs: equal to it (either way round), the same
    repr, pickled and copied as a plain Ranking; `dataclasses.replace` and `with_stage` give
    ordinary rankings. `ids`, `scores`, `reasoned` and `top(k)` read the positions and scores and
    build no ScoredDoc (run files and per-query records read only those). The
    first `docs` read builds those of every ranking of the same batch (a `retrieve` call)
    still alive, with the cyclic GC paused once: one at a time, GC passes between them cost
    half again.
    """

    @staticmethod
    def new_batch() -> Batch:
        return []

    @classmethod
    def pending(
        cls, query: Query, documents: Sequence[Document], ids: Sequence[str], positions: np.ndarray,
        scores: np.ndarray, trace: tuple[StageTrace, ...], batch: Batch | None = None,
    ) -> LazyRanking:  # fmt: skip
        """A ranking of `documents[positions]` with `scores`, built when first read, with `batch`'s others."""
        ranking = object.__new__(cls)
        object.__setattr__(ranking, "query", query)
        object.__setattr__(ranking, "trace", tuple(trace))
        batch = cls.new_batch() if batch is None else batch
        batch.append(weakref.ref(ranking))
        object.__setattr__(ranking, "_pending", _Pending(documents, ids, positions, scores, batch))
        return ranking

    def __getattr__(self, name: str) -> Any:  # only called while `docs` is not built yet
        pending = self.__dict__.get("_pending") if name == "docs" else None
        if pending is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        with _gc_paused():
            for ref in pending.batch:
                ranking = ref()
                if ranking is not None:
                    ranking._build()
            self._build()
        return self.__dict__["docs"]

    def _build(self) -> None:
        pending = self.__dict__.get("_pending")
        if pending is not None:
            object.__setattr__(self, "docs", _scored_docs(pending.documents, pending.positions, pending.scores))
            self.__dict__.pop("_pending", None)

    @property
    def ids(self) -> list[str]:
        pending = self.__dict__.get("_pending")
        if pending is None:
            return super().ids
        return list(map(pending.ids.__getitem__, pending.positions.tolist()))

    @property
    def scores(self) -> list[float]:
        pending = self.__dict__.get("_pending")
        return super().scores if pending is None else pending.scores.tolist()

    @property
    def reasoned(self) -> tuple[ScoredDoc, ...]:
        return super().reasoned if "_pending" not in self.__dict__ else ()  # a retriever's hits carry no reasoning

    def top(self, k: int) -> Ranking:
        pending = self.__dict__.get("_pending")
        if pending is None:
            return super().top(k)
        return LazyRanking.pending(
            self.query, pending.documents, pending.ids, pending.positions[:k], pending.scores[:k], self.trace
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ranking):
            return NotImplemented
        return (self.query, self.docs, self.trace) == (other.query, other.docs, other.trace)

    def __hash__(self) -> int:
        return hash((self.query, self.docs, self.trace))

    def __repr__(self) -> str:
        return repr(self.eager())

    def __reduce__(self) -> tuple[Any, ...]:
        return Ranking, (self.query, self.docs, self.trace)

    def eager(self) -> Ranking:
        """The plain Ranking with these docs."""
        return Ranking(self.query, self.docs, self.trace)


_FAST_SCORED_DOC = ScoredDoc._fields == ("doc", "score", "reasoning")


def _scored_docs(documents: Sequence[Document], positions: np.ndarray, scores: np.ndarray) -> tuple[ScoredDoc, ...]:
    indices = positions.tolist()
    # one itemgetter call picks them all (~10% faster than a map at k=1000); with one index it returns the item itself
    picked = itemgetter(*indices)(documents) if len(indices) > 1 else [documents[i] for i in indices]
    if _FAST_SCORED_DOC:  # what ScoredDoc(doc, score) does, without a Python call per document
        return tuple(map(tuple.__new__, repeat(ScoredDoc), zip(picked, scores.tolist(), repeat(None))))
    return tuple(map(ScoredDoc, picked, scores.tolist()))


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building many result objects (none of them cyclic garbage): with
    k=1000 its repeated passes over the growing heap took half of the retrieval time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
