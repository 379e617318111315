"""What Qrels and Run share: a read-only mapping keyed by query id, in first-seen order."""

from __future__ import annotations

from typing import TypeVar

from personarag.types import KeyedTable

V = TypeVar("V")


class QueryTable(KeyedTable[V]):
    """Query id -> this table's value for it; subclasses fill `_data` and define `__getitem__`
    (returning a copy or a read-only view, so the table stays unchanged)."""

    @property
    def query_ids(self) -> list[str]:
        return list(self._data)
