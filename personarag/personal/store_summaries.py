"""User summaries in the user store: one text per (user, kind), with the history version it was
made from and the fingerprint of what wrote it (model, prompt, generation settings).

`kind` names what the summary is for, e.g. the LaMP task ("LaMP-3") of a task-aware summary.
A summary is derived data like a user vector: deleting the user deletes it; a changed history
leaves it in place but stale (its `history_version` is older than the user's), and
`personarag.personal.summaries.summarize_users` rewrites exactly those.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from personarag.errors import InputError
from personarag.personal import store_schema as schema


@dataclass(frozen=True)
class Summary:
    user_id: str
    kind: str
    text: str
    history_version: int  # the user's history version the summary was made from
    fingerprint: str  # what wrote it: model, prompt template and generation settings (see summaries.py)


def _checked(summary: Any) -> Summary:
    if not isinstance(summary, Summary):
        raise InputError(f"put_summaries: expected Summary objects, got {type(summary).__name__}")
    for name in ("user_id", "kind", "fingerprint"):
        value = getattr(summary, name)
        if not isinstance(value, str) or not value:
            raise InputError(f"summary {name} must be a non-empty string, got {value!r} (user {summary.user_id!r})")
    if not isinstance(summary.text, str):
        raise InputError(f"summary text must be a string, got {type(summary.text).__name__} (user {summary.user_id!r})")
    if not isinstance(summary.history_version, int) or isinstance(summary.history_version, bool) or summary.history_version < 0:
        raise InputError(f"summary history_version must be an integer >= 0, got {summary.history_version!r} "
                         f"(user {summary.user_id!r})")
    return summary


class SummaryStore:
    """The summary methods of `UserStore` (mixed in; uses its tables and transactions)."""

    _t: dict[str, Any]
    url: str

    def summary(self, user_id: str, kind: str) -> Summary | None:
        """The stored summary of this kind for the user (stale or not), or None."""
        return self.summaries(kind, [user_id]).get(user_id)

    def summaries(self, kind: str, user_ids: Iterable[str] | None = None, *, fresh: bool = False) -> dict[str, Summary]:
        """user id -> summary of this kind (default: every user that has one). `fresh=True` leaves
        out summaries made from an older history version than the user's current one."""
        table, users = self._t["summaries"], self._t["users"]
        s = schema.sa()
        query = s.select(table.c.user_id, table.c.text, table.c.history_version, table.c.fingerprint).where(table.c.kind == kind)
        if fresh:
            query = query.join(users, users.c.user_id == table.c.user_id).where(users.c.history_version == table.c.history_version)
        found: dict[str, Summary] = {}
        with self._read() as conn:  # type: ignore[attr-defined]
            if user_ids is None:
                chunks = [query]
            else:
                ids = list(dict.fromkeys(user_ids))
                chunks = [query.where(table.c.user_id.in_(ids[i:i + schema.CHUNK])) for i in range(0, len(ids), schema.CHUNK)]
            for chunk in chunks:
                for user_id, text, version, fingerprint in conn.execute(chunk):
                    found[user_id] = Summary(user_id, kind, text, int(version), fingerprint)
        return found

    def put_summary(self, user_id: str, kind: str, text: str, *, history_version: int, fingerprint: str) -> Summary:
        """Store (replace) the user's summary of this kind; see `put_summaries`."""
        summary = Summary(user_id, kind, text, history_version, fingerprint)
        self.put_summaries([summary])
        return summary

    def put_summaries(self, summaries: Iterable[Summary]) -> None:
        """Store (replace) summaries in one transaction. An unknown user, or a history version newer
        than the user's, is an InputError (nothing is written)."""
        rows = [_checked(x) for x in summaries]
        if not rows:
            return
        users = self._t["users"]
        s = schema.sa()
        with self._write() as conn:  # type: ignore[attr-defined]
            ids = list(dict.fromkeys(r.user_id for r in rows))
            versions: dict[str, int] = {}
            for start in range(0, len(ids), schema.CHUNK):
                versions.update((u, int(v)) for u, v in conn.execute(
                    s.select(users.c.user_id, users.c.history_version).where(users.c.user_id.in_(ids[start:start + schema.CHUNK]))))
            missing = [i for i in ids if i not in versions]
            if missing:
                raise InputError(f"put_summaries: unknown user(s) {missing[:5]} in {self.url}")
            ahead = [f"{r.user_id!r} (summary {r.history_version}, history {versions[r.user_id]})"
                     for r in rows if r.history_version > versions[r.user_id]]
            if ahead:
                raise InputError(f"put_summaries: history version newer than the user's: {', '.join(ahead[:5])} in {self.url}")
            stmt = self._insert(self._t["summaries"])  # type: ignore[attr-defined]
            stmt = stmt.on_conflict_do_update(index_elements=["kind", "user_id"],
                                              set_={n: getattr(stmt.excluded, n) for n in ("history_version", "fingerprint", "text")})
            values = [{"kind": r.kind, "user_id": r.user_id, "history_version": r.history_version,
                       "fingerprint": r.fingerprint, "text": r.text} for r in rows]
            for start in range(0, len(values), schema.CHUNK):
                conn.execute(stmt, values[start:start + schema.CHUNK])

    def _delete_summaries(self, conn: Any, user_id: str) -> None:
        table = self._t["summaries"]
        conn.execute(schema.sa().delete(table).where(table.c.user_id == user_id))
