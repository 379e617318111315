"""`UserStore`: users and their history items, persistent and incremental, with the derived data
kept beside them (item embeddings by encoder fingerprint and content hash, user vectors).

Location: a path or `sqlite:///path.db` (embedded, WAL: one writer at a time, many readers) or
`postgresql://user:password@host:port/database` (shared by several workers or machines); the
same schema and code serve both (SQLAlchemy Core; `pip install "personarag[store]"`).

Keys and rules (decided from the LaMP data: in LaMP-5 dev, 1,422 paper ids appear in the
profiles of several co-authors, with identical content):
- an item is keyed by (user id, item id): item ids are per user. The same id under two users
  is two independent items (updating or deleting one leaves the other); identical content
  shares one cached embedding through its content hash.
- `add_items` is idempotent by item id; an item whose text, title, date, shared flag or fields
  changed is updated. A call that changes anything bumps the user's `history_version` by one;
  a call that changes nothing leaves it (and the change sequence) alone. It creates the user
  when missing (`create=False` refuses instead).
- Reading, deleting or versioning an unknown user raises `InputError` (no silent empty history).
- A user marked not shared (`set_user_shared(id, False)`) never appears in another user's
  results, like an item with `meta["shared"] = False`; the store records the flags, the
  retrievers and the user index honour them.
- Item fields: `id`, `text` (non-empty), `title` (optional), `meta["date"]` (a string in a
  form `personal.dates.parse_date` reads, e.g. 2019-3-5 or 2019-03-05T14:30Z, or absent; an
  unreadable date is an InputError), `meta["shared"]` (bool, default True: False keeps the item
  out of other users' results), every other `meta` field stored as JSON. A `None` date or
  title counts as absent; `None` text or id is an error.
- History order: newest first by the parsed date, undated items last; equal dates (and
  undated items) newest-added first.
- Changes are logged for consumers (`changes_since`); `compact_changes` drops old log rows
  (personal.store_changes).
- Deleting a user deletes their items, their user vectors, their summaries and the cached embeddings no
  remaining item has; an embedding of identical content another user still holds stays.
  Token bags and BM25 postings (history BM25's derived data, `store_tokens`) follow the
  same rules: bags go with the last item of their content, a user's postings with any change.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from personarag.errors import InputError
from personarag.personal import store_schema as schema
from personarag.personal.store_changes import ChangeLog, ChangesCompacted, CompactReport
from personarag.personal.store_io import (
    COMPARED, ImportExport, ImportReport, check_user_id, content_hash, dedupe, document, item_row,
)
from personarag.personal.store_schema import SCHEMA_VERSION
from personarag.personal.store_tokens import TokenTables
from personarag.personal.store_vectors import UserVector, VectorTables
from personarag.personal.store_summaries import Summary, SummaryStore
from personarag.types import Document, User
from personarag.resources import Closeable

logger = logging.getLogger(__name__)

__all__ = ["SCHEMA_VERSION", "ChangesCompacted", "CompactReport", "ImportReport", "Summary", "UserStore", "UserVector",
           "content_hash"]


def _forget_connections(engine_ref: weakref.ref[Any]) -> None:
    engine = engine_ref()
    if engine is not None:
        engine.dispose(close=False)


class UserStore(ImportExport, VectorTables, TokenTables, ChangeLog, SummaryStore, Closeable):
    def __init__(self, location: str | os.PathLike[str] = "personarag.db") -> None:
        self._location = schema.parse_location(location)
        s = schema.sa()
        if self._location.path is not None:
            schema.check_sqlite_path(self._location.path)
        self._engine = schema.create_engine(self._location)
        self._t = schema.tables()
        try:
            with self._write() as conn:
                schema.init_schema(conn, self._location)
        except (s.exc.OperationalError, s.exc.DatabaseError, s.exc.InterfaceError) as error:
            self._engine.dispose()
            raise schema.connect_error(self._location, error) from None
        except BaseException:
            self._engine.dispose()
            raise
        # a forked child (DataLoader workers, multiprocessing) must not share the parent's connections
        os.register_at_fork(after_in_child=functools.partial(_forget_connections, weakref.ref(self._engine)))

    # -- plumbing -----------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Where the store is, password masked."""
        return self._location.display

    @property
    def backend(self) -> str:
        return self._location.backend

    def __repr__(self) -> str:
        return f"UserStore({self.url!r})"

    def config_value(self) -> str:
        """How a saved config names this store: its URL (password masked), which a run reopens."""
        return self.url

    def close(self) -> None:
        self._engine.dispose()


    @contextlib.contextmanager
    def _write(self) -> Iterator[Any]:
        """One write transaction; writers are serialised (see store_schema)."""
        with self._engine.connect() as conn:
            conn.execution_options(personarag_write=True)
            with conn.begin():
                schema.lock_writer(conn, self.backend)
                yield conn

    @contextlib.contextmanager
    def _read(self) -> Iterator[Any]:
        """One consistent snapshot for several statements."""
        with self._engine.connect() as conn:
            if self.backend == "postgresql":
                conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    # -- users and items ----------------------------------------------------------------
    def add_users(self, users: Iterable[User]) -> dict[str, int]:
        """Add users with their histories (merged into existing ones); user id -> history version."""
        users = list(users)
        for position, user in enumerate(users):
            if not isinstance(user, User):
                raise InputError(f"add_users: item {position} is a {type(user).__name__}, expected User")
        rows = [(user.id, [item_row(user.id, d) for d in user.history]) for user in users]
        versions: dict[str, int] = {}
        with self._write() as conn:
            for user_id, items in rows:
                versions[user_id], _ = self._add_rows(conn, user_id, items, create=True)
        return versions

    def add_items(self, user_id: str, items: Iterable[Document], *, create: bool = True) -> int:
        """Add or update history items of one user; the history version after."""
        check_user_id(user_id)
        rows = [item_row(user_id, d) for d in items]
        with self._write() as conn:
            version, _ = self._add_rows(conn, user_id, rows, create=create)
        return version

    def delete_item(self, user_id: str, item_id: str) -> int:
        """Delete one item; the history version after. Unknown user or item: InputError."""
        t, s = self._t, schema.sa()
        items = t["items"]
        with self._write() as conn:
            version = self._version(conn, user_id)
            row = conn.execute(s.select(items.c.content_hash).where(
                items.c.user_id == user_id, items.c.item_id == item_id)).first()
            if row is None:
                raise InputError(f"user {user_id!r} has no item {item_id!r} in {self.url}")
            conn.execute(s.delete(items).where(items.c.user_id == user_id, items.c.item_id == item_id))
            version = self._bump(conn, user_id, version)
            self._drop_orphan_embeddings(conn, [row[0]])
        return version

    def delete_user(self, user_id: str) -> None:
        """Delete a user with their items, user vectors, summaries and the embeddings no remaining item has."""
        t, s = self._t, schema.sa()
        with self._write() as conn:
            self._version(conn, user_id)
            hashes = [r[0] for r in conn.execute(
                s.select(t["items"].c.content_hash).where(t["items"].c.user_id == user_id))]
            conn.execute(s.delete(t["items"]).where(t["items"].c.user_id == user_id))
            conn.execute(s.delete(t["user_vectors"]).where(t["user_vectors"].c.user_id == user_id))
            self._drop_postings(conn, user_id)
            self._delete_summaries(conn, user_id)
            conn.execute(s.delete(t["users"]).where(t["users"].c.user_id == user_id))
            conn.execute(s.insert(t["changes"]).values(user_id=user_id))
            self._drop_orphan_embeddings(conn, hashes)

    def has_user(self, user_id: str) -> bool:
        users = self._t["users"]
        with self._read() as conn:
            return conn.execute(schema.sa().select(users.c.user_id).where(users.c.user_id == user_id)).first() is not None

    def set_user_shared(self, user_id: str, shared: bool) -> None:
        """shared=False keeps the whole user out of other users' results (recorded as a change)."""
        if not isinstance(shared, bool):
            raise InputError(f"shared must be True or False, got {shared!r}")
        users = self._t["users"]
        s = schema.sa()
        with self._write() as conn:
            self._version(conn, user_id)
            conn.execute(s.update(users).where(users.c.user_id == user_id).values(shared=shared))
            conn.execute(s.insert(self._t["changes"]).values(user_id=user_id))

    def private_user_ids(self) -> set[str]:
        """Users marked not shared (`set_user_shared(..., False)`)."""
        users = self._t["users"]
        with self._read() as conn:
            return {r[0] for r in conn.execute(schema.sa().select(users.c.user_id).where(users.c.shared.is_(False)))}

    def history_version(self, user_id: str) -> int:
        with self._read() as conn:
            return self._version(conn, user_id)

    def history_versions(self, user_ids: Iterable[str] | None = None) -> dict[str, int]:
        """user id -> history version for many users in one read (default: all); unknown ids are left out."""
        users = self._t["users"]
        query = schema.sa().select(users.c.user_id, users.c.history_version)
        ids = None if user_ids is None else list(dict.fromkeys(user_ids))
        versions: dict[str, int] = {}
        with self._read() as conn:
            if ids is None:
                return {u: int(v) for u, v in conn.execute(query)}
            for start in range(0, len(ids), schema.CHUNK):
                versions.update((u, int(v)) for u, v in conn.execute(
                    query.where(users.c.user_id.in_(ids[start:start + schema.CHUNK]))))
        return versions

    def user(self, user_id: str) -> User:
        """The user with their history newest first. Unknown id: InputError."""
        return next(self.users([user_id]))

    def user_and_version(self, user_id: str) -> tuple[User, int]:
        """The user and the history version of exactly that history (one snapshot), for callers
        that update derived data incrementally and must know what their delta applies to."""
        with self._read() as conn:
            version = self._version(conn, user_id)
            history = self._histories(conn, [user_id])[user_id]
        return User(user_id, tuple(history)), version

    def users(self, user_ids: Iterable[str] | None = None) -> Iterator[User]:
        """Users in the order asked, read in chunks; an unknown id is an InputError. Default: every
        user, by id (one deleted by another process while this iterates is left out)."""
        ids = self.user_ids() if user_ids is None else list(user_ids)
        for start in range(0, len(ids), schema.CHUNK):
            chunk = ids[start:start + schema.CHUNK]
            with self._read() as conn:
                histories = self._histories(conn, chunk, strict=user_ids is not None)
            yield from (User(user_id, tuple(histories[user_id])) for user_id in chunk if user_id in histories)

    def user_ids(self) -> list[str]:
        users = self._t["users"]
        with self._read() as conn:
            return [r[0] for r in conn.execute(schema.sa().select(users.c.user_id).order_by(users.c.user_id))]

    def __len__(self) -> int:
        users = self._t["users"]
        s = schema.sa()
        with self._read() as conn:
            return int(conn.execute(s.select(s.func.count()).select_from(users)).scalar_one())

    # -- internals ------------------------------------------------------------------------
    def _insert(self, table: Any) -> Any:
        dialect = schema.sa().dialects.sqlite if self.backend == "sqlite" else schema.sa().dialects.postgresql
        return dialect.insert(table)

    def _version(self, conn: Any, user_id: str) -> int:
        users = self._t["users"]
        row = conn.execute(schema.sa().select(users.c.history_version).where(users.c.user_id == user_id)).first()
        if row is None:
            raise InputError(f"unknown user {user_id!r} in the user store {self.url}")
        return int(row[0])

    def _bump(self, conn: Any, user_id: str, version: int, **values: Any) -> int:
        s, t = schema.sa(), self._t
        conn.execute(s.update(t["users"]).where(t["users"].c.user_id == user_id)
                     .values(history_version=version + 1, **values))
        conn.execute(s.insert(t["changes"]).values(user_id=user_id))
        self._drop_postings(conn, user_id)  # built from the old history
        return version + 1

    def _add_rows(self, conn: Any, user_id: str, rows: list[dict[str, Any]], *, create: bool) -> tuple[int, ImportReport]:
        s, t = schema.sa(), self._t
        items, users = t["items"], t["users"]
        rows = dedupe(user_id, rows)
        head = conn.execute(s.select(users.c.history_version, users.c.next_pos).where(users.c.user_id == user_id)).first()
        new_user = head is None
        if new_user:
            if not create:
                raise InputError(f"unknown user {user_id!r} in the user store {self.url} (add the user first)")
            conn.execute(s.insert(users).values(user_id=user_id, history_version=0, next_pos=0, shared=True))
            version, pos = 0, 0
        else:
            version, pos = int(head[0]), int(head[1])
        existing: dict[str, Any] = {}
        if not new_user:
            ids = [r["item_id"] for r in rows]
            for start in range(0, len(ids), schema.CHUNK):
                for row in conn.execute(s.select(items).where(
                        items.c.user_id == user_id, items.c.item_id.in_(ids[start:start + schema.CHUNK]))):
                    existing[row.item_id] = row
        inserts, updates, stale_hashes = [], [], []
        for row in rows:
            old = existing.get(row["item_id"])
            if old is None:
                inserts.append({**row, "pos": pos})
                pos += 1
            elif any(getattr(old, key) != row[key] for key in COMPARED):
                updates.append(row)
                if old.content_hash != row["content_hash"]:
                    stale_hashes.append(old.content_hash)
        if inserts:
            conn.execute(s.insert(items), inserts)
        for row in updates:
            conn.execute(s.update(items).where(items.c.user_id == user_id, items.c.item_id == row["item_id"])
                         .values({key: row[key] for key in COMPARED}))
        if inserts or updates:
            version = self._bump(conn, user_id, version, next_pos=pos)
        elif new_user:
            conn.execute(s.insert(t["changes"]).values(user_id=user_id))
        if stale_hashes:
            self._drop_orphan_embeddings(conn, stale_hashes)
        report = ImportReport(1, int(new_user), len(inserts), len(updates), len(rows) - len(inserts) - len(updates))
        return version, report

    def _drop_orphan_embeddings(self, conn: Any, hashes: Sequence[str]) -> None:
        s, t = schema.sa(), self._t
        items = t["items"]
        hashes = list(dict.fromkeys(hashes))
        for derived in (t["embeddings"], t["token_bags"]):  # both keyed by content hash
            still_used = s.select(items.c.content_hash).where(items.c.content_hash == derived.c.content_hash).exists()
            for start in range(0, len(hashes), schema.CHUNK):
                conn.execute(s.delete(derived).where(derived.c.content_hash.in_(hashes[start:start + schema.CHUNK]), ~still_used))

    def _histories(self, conn: Any, user_ids: Sequence[str], strict: bool = True) -> dict[str, list[Document]]:
        s, t = schema.sa(), self._t
        items, users = t["items"], t["users"]
        known = {r[0] for r in conn.execute(s.select(users.c.user_id).where(users.c.user_id.in_(user_ids)))}
        missing = [u for u in user_ids if u not in known]
        if missing and strict:
            raise InputError(f"unknown user(s) {missing[:5]} in the user store {self.url}")
        histories: dict[str, list[Document]] = {u: [] for u in user_ids if u in known}
        rows = conn.execute(s.select(items).where(items.c.user_id.in_(user_ids))
                            .order_by(items.c.user_id, items.c.date_key.desc().nulls_last(), items.c.pos.desc()))
        for row in rows:
            histories[row.user_id].append(document(row))
        return histories
