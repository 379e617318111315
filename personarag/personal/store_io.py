"""Rows of the user store: Documents to and from table rows and JSON lines, LaMP files to users."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from personarag.errors import InputError
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


def read_jsonl_users(path: Path) -> list[User]:
    """The users of an `export` file: one `{"user_id", "history": [{"id", "text", "title", "meta"}]}` per line."""
    if not path.is_file():
        raise InputError(f"{path}: no such file (expected a JSONL export of a user store)")
    users = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                users.append(user_from_json(line, f"{path}:{number}"))
    return users


COMPARED = ("text", "title", "date", "shared", "fields", "content_hash")


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
    shared = meta.get("shared", True)
    if not isinstance(shared, bool):
        raise InputError(f"{where}: meta['shared'] must be true or false, got {shared!r}")
    fields = {k: v for k, v in meta.items() if k not in RESERVED_META}
    try:
        fields_json = json.dumps(fields, sort_keys=True, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InputError(f"{where}: meta fields must be JSON values: {error}") from None
    return {"user_id": user_id, "item_id": doc.id, "text": doc.text, "title": doc.title or None,
            "date": date or None, "shared": shared, "fields": fields_json, "content_hash": content_hash(doc)}


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


def user_from_json(line: str, where: str) -> User:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise InputError(f"{where}: not valid JSON ({error})") from None
    if not isinstance(record, dict) or not isinstance(record.get("history"), list):
        raise InputError(f"{where}: expected an object with 'user_id' and a 'history' list")
    user_id = record.get("user_id")
    if not isinstance(user_id, str) or not user_id:
        raise InputError(f"{where}: 'user_id' must be a non-empty string, got {user_id!r}")
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
    return User(user_id, tuple(history))


def vector_blob(vector: Any, where: str) -> dict[str, Any]:
    array = np.asarray(vector, dtype=np.float32)
    if array.ndim != 1 or array.size == 0:
        raise InputError(f"{where}: expected a non-empty 1-d vector, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise InputError(f"{where}: the vector holds NaN or infinite values")
    return {"dim": int(array.size), "vector": np.ascontiguousarray(array).tobytes()}


def task_from_path(path: Path) -> str:
    for part in reversed(path.absolute().parts):
        if part.startswith("LaMP_") and part[5:6].isdigit():
            return f"LaMP-{part[5]}"
    raise InputError(f"{path}: cannot tell the LaMP task from the path; pass the task (e.g. 'LaMP-3')")
