"""The retriever interface: index a corpus once, then retrieve for batches of queries."""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Iterable, Sequence
from typing import ClassVar

from personarag.component import Component
from personarag.errors import InputError
from personarag.types import Corpus, Document, Query, Ranking

logger = logging.getLogger(__name__)


class Retriever(Component):
    role: ClassVar[str] = "retriever"
    #: Retrievers that find their candidates in each query's user (history, collaborative)
    #: need no corpus; the pipeline skips `index` for them when it has none.
    needs_corpus: ClassVar[bool] = True

    def index(self, corpus: Corpus | Iterable[Document]) -> None:
        """Build (or rebuild) the index over `corpus`."""
        self._index(corpus if isinstance(corpus, Corpus) else Corpus(corpus))

    @abstractmethod
    def _index(self, corpus: Corpus) -> None: ...

    def retrieve(self, queries: Sequence[Query] | Query, k: int = 100) -> list[Ranking]:
        """Top-`k` documents for each query, best first. A `k` above the corpus size returns them all."""
        batch = [queries] if isinstance(queries, Query) else list(queries)
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise InputError(f"k must be a positive integer, got {k!r}")
        for position, query in enumerate(batch):
            if not isinstance(query, Query):
                raise InputError(f"queries[{position}] is a {type(query).__name__}, expected Query")
        if not batch:
            return []
        return self._retrieve(batch, k)

    @abstractmethod
    def _retrieve(self, queries: list[Query], k: int) -> list[Ranking]: ...
