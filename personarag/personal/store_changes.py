"""The user store's change log: which users changed after a sequence number, and compaction.

Every write that changes a user appends (seq, user id) to `pr_changes`; a consumer (a bound
collaborative retriever, a server) remembers the sequence it has applied and asks
`changes_since(seq)` for what came after. The log would grow forever, so `compact_changes`
drops rows up to a watermark and records it in `pr_meta` (`changes_floor`). A consumer still
behind the watermark cannot learn what it missed: `changes_since` raises `ChangesCompacted`
instead of answering with a partial list, and the consumer re-reads everything
(`CollaborativeRetriever.sync` does so by itself).

The newest row is never dropped: SQLite (without AUTOINCREMENT) numbers a new row max(seq)+1,
so an empty table would restart the sequence below what consumers hold.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from personarag.errors import InputError
from personarag.personal import store_schema as schema

FLOOR_KEY = "changes_floor"


_HEADS: Any = None


def _heads_clause() -> Any:
    """The heads query as a sqlalchemy text clause, built once (sqlalchemy is an extra)."""
    global _HEADS
    if _HEADS is None:
        _HEADS = schema.sa().text(
            f"SELECT (SELECT max(seq) FROM pr_changes), (SELECT value FROM pr_meta WHERE key = '{FLOOR_KEY}')")
    return _HEADS


class ChangesCompacted(InputError):
    """The change log no longer covers the position asked about: re-read every user."""

    def __init__(self, sequence: int, floor: int, where: str) -> None:
        super().__init__(f"changes_since({sequence}): the change log of {where} was compacted through "
                         f"sequence {floor}; re-read every user (and continue from change_sequence())")
        self.sequence, self.floor = sequence, floor


@dataclass(frozen=True)
class CompactReport:
    dropped: int  # change-log rows deleted
    floor: int  # changes at or below it are gone; a consumer behind it re-reads everything
    sequence: int  # the current change sequence (unchanged by compaction)
    remaining: int  # rows left in the log


class ChangeLog:
    """Mixed into `UserStore` (uses its tables `_t`, `_read`, `_write`, `_insert` and `url`)."""

    _t: dict[str, Any]  # these come from UserStore
    _write: Callable[[], AbstractContextManager[Any]]
    _read: Callable[[], AbstractContextManager[Any]]
    _insert: Callable[[Any], Any]
    url: str

    def _heads(self, conn: Any) -> tuple[int, int]:
        """(current sequence, floor) in one statement; plain SQL, because a bound retriever asks
        before every batch and the compiled form costs more than the query itself."""
        current, floor_text = conn.execute(_heads_clause()).one()
        floor_value = int(floor_text or 0)
        return max(int(current or 0), floor_value), floor_value

    def change_sequence(self) -> int:
        """The sequence of the newest change (0 for none): where a new consumer starts."""
        with self._read() as conn:
            return self._heads(conn)[0]

    def change_floor(self) -> int:
        """The compaction watermark: changes at or below it are no longer listed (0: never compacted)."""
        with self._read() as conn:
            return self._heads(conn)[1]

    def changes_since(self, sequence: int) -> tuple[int, list[str]]:
        """(current change sequence, sorted ids of users added, changed or deleted after `sequence`).
        A `sequence` below the compaction watermark raises `ChangesCompacted`."""
        if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 0:
            raise InputError(f"changes_since expects a sequence number >= 0, got {sequence!r}")
        changes = self._t["changes"]
        s = schema.sa()
        with self._read() as conn:
            current, floor = self._heads(conn)
            if sequence < floor:
                raise ChangesCompacted(sequence, floor, self.url)
            if current <= sequence:
                return current, []
            ids = conn.execute(s.select(changes.c.user_id).where(changes.c.seq > sequence)
                               .distinct().order_by(changes.c.user_id))
            return current, [r[0] for r in ids]

    def compact_changes(self, through: int | None = None, *, keep: int = 0) -> CompactReport:
        """Drop change-log rows with a sequence <= `through` (default: the current sequence),
        keeping at least the newest `keep` changes (and always the newest row)."""
        for name, value in (("through", through), ("keep", keep)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise InputError(f"compact_changes: {name} must be an integer >= 0, got {value!r}")
        s, changes, meta = schema.sa(), self._t["changes"], self._t["meta"]
        with self._write() as conn:
            current, floor = self._heads(conn)
            if through is not None and through > current:
                raise InputError(f"compact_changes: through={through} is past the newest change ({current}) in {self.url}")
            target = min(current if through is None else through, current - keep)
            dropped = 0
            if target > floor:
                dropped = conn.execute(s.delete(changes).where(changes.c.seq <= target, changes.c.seq < current)).rowcount
                stmt = self._insert(meta).values(key=FLOOR_KEY, value=str(target))
                conn.execute(stmt.on_conflict_do_update(index_elements=["key"], set_={"value": stmt.excluded.value}))
                floor = target
            remaining = int(conn.execute(s.select(s.func.count()).select_from(changes)).scalar_one())
        return CompactReport(int(dropped), floor, current, remaining)
