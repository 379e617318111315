"""What Qrels and Run share: a read-only mapping keyed by query id, in first-seen order."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

V = TypeVar("V")


class QueryTable(Mapping[str, V]):
    """Query id -> this table's value for it; subclasses fill `_data` and define `__getitem__`
    (returning a copy or a read-only view, so the table stays unchanged)."""

    _data: dict[str, Any]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    @property
    def query_ids(self) -> list[str]:
        return list(self._data)
