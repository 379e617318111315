"""Rows of the user store: Documents to and from table rows and JSON lines, LaMP files to users,
and the store's import / export methods."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Callable, Collection, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from personarag.errors import InputError
from personarag.personal import store_schema as schema
from personarag.personal.dates import parse_date
from personarag.types import Document, User

RESERVED_META = ("date", "shared")


def content_hash(doc: Document) -> str:
    """sha256 hex of `doc.full_text`, what the encoders embed: the item-embedding cache key."""
    return hashlib.sha256(doc.full_text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ImportReport:
    users: int = 0  # users in the input
    new_users: int = 0
    items_added: int = 0
    items_updated: int = 0
    items_unchanged: int = 0

    def __add__(self, other: ImportReport) -> ImportReport:
        return ImportReport(*(a + b for a, b in zip(_report_fields(self), _report_fields(other))))


def _report_fields(report: ImportReport) -> tuple[int, ...]:
    return (report.users, report.new_users, report.items_added, report.items_updated, report.items_unchanged)


def lamp_users(path: Path, task: str | None) -> list[User]:
    """The users of a LaMP questions file, each user's profiles merged (items in file order)."""
    from personarag.evaluation.lamp import load_lamp  # the one LaMP parser; it validates the whole file first

    merged: dict[str, dict[str, Document]] = {}
    for query in load_lamp(task or task_from_path(path), path).queries:
        assert query.user is not None  # the LaMP loader gives every query a user
        items = merged.setdefault(query.user.id, {})
        for doc in query.user.history:
            items.setdefault(doc.id, doc)
    return [User(user_id, tuple(items.values())) for user_id, items in merged.items()]


def read_jsonl_users(path: Path) -> tuple[list[User], set[str]]:
    """The users of an `export` file, one `{"user_id", "history": [{"id", "text", "title", "meta"}],
    "shared"?: false}` per line, and the ids of those marked not shared."""
    if not path.is_file():
        raise InputError(f"{path}: no such file (expected a JSONL export of a user store)")
    users, private = [], set()
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                user, shared = user_from_json(line, f"{path}:{number}")
                users.append(user)
                if not shared:
                    private.add(user.id)
    return users, private


COMPARED = ("text", "title", "date", "date_key", "shared", "fields", "content_hash")


def check_user_id(user_id: object) -> None:
    if not isinstance(user_id, str) or not user_id:
        raise InputError(f"user id must be a non-empty string, got {user_id!r}")


def item_row(user_id: str, doc: Document) -> dict[str, Any]:
    where = f"user {user_id!r}, item {getattr(doc, 'id', None)!r}"
    if not isinstance(doc, Document):
        raise InputError(f"{where}: expected a Document, got {type(doc).__name__}")
    if not doc.text.strip():
        raise InputError(f"{where}: the item has no text (an empty text cannot be retrieved or embedded)")
    if doc.title is not None and not isinstance(doc.title, str):
        raise InputError(f"{where}: title must be a string or None, got {doc.title!r:.80}")
    meta = dict(doc.meta)
    date = meta.get("date")
    if date is not None and not isinstance(date, str):
        raise InputError(f"{where}: meta['date'] must be a string such as '2018-06-01' or absent, got {date!r}")
    moment = parse_date(date, where)
    shared = meta.get("shared", True)
    if not isinstance(shared, bool):
        raise InputError(f"{where}: meta['shared'] must be true or false, got {shared!r}")
    fields = {k: v for k, v in meta.items() if k not in RESERVED_META}
    try:
        fields_json = json.dumps(fields, sort_keys=True, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InputError(f"{where}: meta fields must be JSON values: {error}") from None
    return {"user_id": user_id, "item_id": doc.id, "text": doc.text, "title": doc.title or None,
            "date": date or None, "date_key": None if moment is None else date_key(moment), "shared": shared, "fields": fields_json, "content_hash": content_hash(doc)}


def date_key(moment: dt.datetime) -> str:
    """A moment as text that sorts like the moment (zero-padded, whatever the input's padding)."""
    return (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:{moment.minute:02d}:"
            f"{moment.second:02d}.{moment.microsecond:06d}")


def dedupe(user_id: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_id: dict[str, dict[str, Any]] = {}
    for row in rows:
        seen = by_id.get(row["item_id"])
        if seen is not None and any(seen[k] != row[k] for k in COMPARED):
            raise InputError(f"user {user_id!r}: item id {row['item_id']!r} appears twice with different content "
                             "in one call; item ids are unique per user")
        by_id.setdefault(row["item_id"], row)
    return list(by_id.values())


def document(row: Any) -> Document:
    meta: dict[str, Any] = json.loads(row.fields)
    if row.date is not None:
        meta["date"] = row.date
    if not row.shared:
        meta["shared"] = False
    return Document(id=row.item_id, text=row.text, title=row.title, meta=meta)


def item_json(doc: Document) -> dict[str, Any]:
    record: dict[str, Any] = {"id": doc.id, "text": doc.text,
                              "meta": dict(doc.meta)}
    if doc.title is not None:
        record["title"] = doc.title
    return record


def user_from_json(line: str, where: str) -> tuple[User, bool]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise InputError(f"{where}: not valid JSON ({error})") from None
    if not isinstance(record, dict) or not isinstance(record.get("history"), list):
        raise InputError(f"{where}: expected an object with 'user_id' and a 'history' list")
    user_id = record.get("user_id")
    if not isinstance(user_id, str) or not user_id:
        raise InputError(f"{where}: 'user_id' must be a non-empty string, got {user_id!r}")
    shared = record.get("shared", True)
    if not isinstance(shared, bool):
        raise InputError(f"{where}: 'shared' must be true or false, got {shared!r}")
    history = []
    for index, item in enumerate(record["history"]):
        here = f"{where}, user {user_id!r}, item {index}"
        if not isinstance(item, dict):
            raise InputError(f"{here}: expected an object, got {type(item).__name__}")
        for name in ("id", "text"):
            if not isinstance(item.get(name), str) or not item[name]:
                raise InputError(f"{here}: {name!r} must be a non-empty string, got {item.get(name)!r:.80}")
        meta = item.get("meta") or {}
        if not isinstance(meta, dict):
            raise InputError(f"{here}: 'meta' must be an object, got {type(meta).__name__}")
        if meta.get("date", "") is None:
            meta = {k: v for k, v in meta.items() if k != "date"}
        history.append(Document(id=item["id"], text=item["text"], title=item.get("title"), meta=meta))
    return User(user_id, tuple(history)), shared


def vector_blob(vector: Any, where: str) -> dict[str, Any]:
    array = np.asarray(vector, dtype=np.float32)
    if array.ndim != 1 or array.size == 0:
        raise InputError(f"{where}: expected a non-empty 1-d vector, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise InputError(f"{where}: the vector holds NaN or infinite values")
    return {"dim": int(array.size), "vector": array.astype("<f4").tobytes()}  # little-endian on every machine


def task_from_path(path: Path) -> str:
    for part in reversed(path.absolute().parts):
        if part.startswith("LaMP_") and part[5:6].isdigit():
            return f"LaMP-{part[5]}"
    raise InputError(f"{path}: cannot tell the LaMP task from the path; pass the task (e.g. 'LaMP-3')")


class ImportExport:
    """UserStore's bulk methods (a mixin: it uses the store's transactions and row writer)."""

    _t: dict[str, Any]  # these come from UserStore
    _write: Callable[[], AbstractContextManager[Any]]
    _read: Callable[[], AbstractContextManager[Any]]
    _add_rows: Callable[..., tuple[int, ImportReport]]

    def import_users(self, users: Iterable[User], *, batch_size: int = 64, progress: bool = False,
                     total: int | None = None, private: Collection[str] = ()) -> ImportReport:
        """Merge users in, one transaction per batch: a crash loses only the batch in flight,
        and a rerun (idempotent by item id) ends with the same store. Users in `private` are
        marked not shared."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        from tqdm.auto import tqdm

        report = ImportReport()
        bar = tqdm(total=total, unit="user", desc="import", disable=None if progress else True)  # None: off without a TTY
        batch: list[tuple[str, list[dict[str, Any]]]] = []
        try:
            for user in users:
                batch.append((user.id, [item_row(user.id, d) for d in user.history]))
                if len(batch) >= batch_size:
                    report += self._import_batch(batch, private)
                    bar.update(len(batch))
                    batch = []
            if batch:
                report += self._import_batch(batch, private)
                bar.update(len(batch))
        finally:
            bar.close()
        return report

    def _import_batch(self, batch: list[tuple[str, list[dict[str, Any]]]], private: Collection[str]) -> ImportReport:
        report = ImportReport()
        users = self._t["users"]
        with self._write() as conn:
            for user_id, rows in batch:
                _, counts = self._add_rows(conn, user_id, rows, create=True)
                report += counts
                if user_id in private:
                    conn.execute(schema.sa().update(users).where(users.c.user_id == user_id).values(shared=False))
        return report

    def import_lamp(self, questions_path: str | os.PathLike[str], task: str | None = None, *,
                    batch_size: int = 64, progress: bool = False) -> ImportReport:
        """Import the users of a LaMP questions file (each user's profiles merged, items in file order).

        `task` ("LaMP-3") picks the profile fields; default: read from a `LaMP_N` folder name."""
        users = lamp_users(Path(questions_path), task)
        return self.import_users(users, batch_size=batch_size, progress=progress, total=len(users))

    def import_jsonl(self, path: str | os.PathLike[str], *, batch_size: int = 64,
                     progress: bool = False) -> ImportReport:
        """Import an `export` file: one `{"user_id", "history": [{"id", "text", "title", "meta"}]}` per line."""
        users, private = read_jsonl_users(Path(path))
        return self.import_users(users, batch_size=batch_size, progress=progress, total=len(users), private=private)

    def export(self, path: str | os.PathLike[str]) -> int:
        """Write every user (by id) as one JSON line, items in insertion order so that
        `import_jsonl` rebuilds the same histories; one consistent snapshot of the store, even
        while others write. The number of users written."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        s, t = schema.sa(), self._t
        items, users = t["items"], t["users"]
        count = 0
        with self._read() as conn, tmp.open("w", encoding="utf-8") as handle:
            ids = sorted(r[0] for r in conn.execute(s.select(users.c.user_id)))
            private = {r[0] for r in conn.execute(s.select(users.c.user_id).where(users.c.shared.is_(False)))}
            for start in range(0, len(ids), schema.CHUNK):
                chunk = ids[start:start + schema.CHUNK]
                histories: dict[str, list[Document]] = {user_id: [] for user_id in chunk}
                for row in conn.execute(s.select(items).where(items.c.user_id.in_(chunk)).order_by(items.c.pos)):
                    histories[row.user_id].append(document(row))
                for user_id in chunk:
                    record: dict[str, Any] = {"user_id": user_id, "history": [item_json(d) for d in histories[user_id]]}
                    if user_id in private:
                        record["shared"] = False
                    handle.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
                    count += 1
        os.replace(tmp, path)
        return count
