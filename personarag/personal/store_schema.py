"""The user store's tables, and opening them on SQLite (a file) or PostgreSQL (a URL).

One SQLAlchemy Core schema serves both backends. Writers run one at a time: on SQLite every
write transaction starts with `BEGIN IMMEDIATE` (WAL lets readers go on meanwhile; a second
writer waits up to the busy timeout); on PostgreSQL it takes a transaction-level advisory lock
first. Serialising writers keeps the change sequence gap-free in commit order, so
`changes_since` never skips a change that commits late, and makes read-modify-write of a
user's history safe across processes and machines without retry loops.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personarag.errors import InputError, require

#: bump when a table or column changes; a store of another version is refused, except the
#: additive steps in `_MIGRATIONS`, which only create tables and are applied (and logged) on open
SCHEMA_VERSION = 3
BUSY_TIMEOUT_MS = 60_000
CHUNK = 500  # ids (or rows) per statement: an IN (...) list far below SQLite's variable limit
logger = logging.getLogger(__name__)
_PG_WRITER_LOCK = 0x70657273  # advisory lock key ("pers") held by the one PostgreSQL writer

_sa: Any = None
_TABLES: dict[str, Any] = {}


def sa() -> Any:
    """sqlalchemy, imported on first use (the `store` extra)."""
    global _sa
    if _sa is None:
        _sa = require("sqlalchemy", "store", purpose="the user store")
    return _sa


def tables() -> dict[str, Any]:
    """name -> sqlalchemy Table, built on first use."""
    if _TABLES:
        return _TABLES
    s = sa()
    metadata = s.MetaData()
    big_id = s.BigInteger().with_variant(s.Integer(), "sqlite")  # SQLite autoincrements INTEGER PKs only

    def key() -> Any:
        """Ids and dates compare bytewise on both backends (PostgreSQL's locale collations would not)."""
        return s.Text().with_variant(s.Text(collation="C"), "postgresql")

    _TABLES["metadata"] = metadata
    _TABLES["meta"] = s.Table(
        "pr_meta", metadata,
        s.Column("key", key(), primary_key=True),
        s.Column("value", s.Text, nullable=False),
    )
    _TABLES["users"] = s.Table(
        "pr_users", metadata,
        s.Column("user_id", key(), primary_key=True),
        s.Column("history_version", s.Integer, nullable=False),
        s.Column("next_pos", s.Integer, nullable=False),  # insertion counter: order of undated/equal-dated items
        s.Column("shared", s.Boolean, nullable=False),  # False: never in another user's results
    )
    _TABLES["items"] = s.Table(
        "pr_items", metadata,
        s.Column("user_id", key(), primary_key=True),
        s.Column("item_id", key(), primary_key=True),
        s.Column("pos", s.Integer, nullable=False),
        s.Column("text", s.Text, nullable=False),
        s.Column("title", s.Text, nullable=True),
        s.Column("date", s.Text, nullable=True),  # as given (meta["date"])
        s.Column("date_key", key(), nullable=True),  # the parsed moment, zero-padded: orders the history
        s.Column("shared", s.Boolean, nullable=False),
        s.Column("fields", s.Text, nullable=False),  # the other meta fields, JSON with sorted keys
        s.Column("content_hash", key(), nullable=False),
        s.Index("pr_items_content_hash", "content_hash"),
    )
    _TABLES["changes"] = s.Table(
        "pr_changes", metadata,
        s.Column("seq", big_id, primary_key=True, autoincrement=True),
        s.Column("user_id", key(), nullable=False),
    )
    _TABLES["embeddings"] = s.Table(
        "pr_embeddings", metadata,
        s.Column("fingerprint", key(), primary_key=True),
        s.Column("content_hash", key(), primary_key=True),
        s.Column("dim", s.Integer, nullable=False),
        s.Column("vector", s.LargeBinary, nullable=False),  # float32, little-endian
        s.Index("pr_embeddings_content_hash", "content_hash"),
    )
    _TABLES["user_vectors"] = s.Table(
        "pr_user_vectors", metadata,
        s.Column("kind", key(), primary_key=True),
        s.Column("user_id", key(), primary_key=True),
        s.Column("dim", s.Integer, nullable=False),
        s.Column("count", s.Integer, nullable=False),
        s.Column("history_version", s.Integer, nullable=False),
        s.Column("vector", s.LargeBinary, nullable=False),
        s.Index("pr_user_vectors_user", "user_id"),
    )
    # history BM25's derived data (schema 2), per tokenizer fingerprint: an append-only
    # vocabulary (term id = position), each text's bag over it, each user's postings
    _TABLES["token_terms"] = s.Table(
        "pr_token_terms", metadata,
        s.Column("fingerprint", key(), primary_key=True),
        s.Column("first_id", s.Integer, primary_key=True),  # id of the chunk's first term
        s.Column("terms", s.Text, nullable=False),  # JSON list
    )
    _TABLES["token_bags"] = s.Table(
        "pr_token_bags", metadata,
        s.Column("fingerprint", key(), primary_key=True),
        s.Column("content_hash", key(), primary_key=True),
        s.Column("length", s.Integer, nullable=False),  # tokens in the text
        s.Column("bag", s.LargeBinary, nullable=False),  # int64 LE: term << 32 | count, first occurrence first
        s.Index("pr_token_bags_content_hash", "content_hash"),
    )
    _TABLES["bm25_postings"] = s.Table(
        "pr_bm25_postings", metadata,
        s.Column("fingerprint", key(), primary_key=True),
        s.Column("params", key(), primary_key=True),  # k1, b, epsilon
        s.Column("user_id", key(), primary_key=True),
        s.Column("history_version", s.Integer, nullable=False),  # the user's version when written
        s.Column("digest", key(), nullable=False),  # personal.stored_tokens.history_digest of the indexed history
        s.Column("terms", s.Integer, nullable=False),  # vocabulary size when written: term ids are below it
        s.Column("postings", s.LargeBinary, nullable=False),  # records: term i4, row i4, tf i4, weight f8
        s.Column("lengths", s.LargeBinary, nullable=False),  # f8 tokens per history item
        s.Index("pr_bm25_postings_user", "user_id"),
    )
    # LLM summaries of users' histories (schema 3), with the history version each was made from
    _TABLES["summaries"] = s.Table(
        "pr_summaries", metadata,
        s.Column("kind", key(), primary_key=True),  # e.g. the LaMP task the summary was written for
        s.Column("user_id", key(), primary_key=True),
        s.Column("history_version", s.Integer, nullable=False),  # the history it was made from
        s.Column("fingerprint", s.Text, nullable=False),  # model + prompt + generation settings
        s.Column("text", s.Text, nullable=False),
        s.Index("pr_summaries_user", "user_id"),
    )
    return _TABLES


#: schema version -> tables added by the step to the next version (additive only)
_MIGRATIONS = {1: ("token_terms", "token_bags", "bm25_postings"), 2: ("summaries",)}


@dataclass(frozen=True)
class Location:
    backend: str  # "sqlite" | "postgresql"
    url: Any  # sqlalchemy URL with the driver set
    path: Path | None  # the SQLite file

    @property
    def display(self) -> str:
        """The URL with its password masked: safe for messages and logs."""
        if self.path is not None:
            return f"sqlite:///{self.path}"
        return self.url.set(drivername=self.backend).render_as_string(hide_password=True)


def parse_location(location: str | os.PathLike[str]) -> Location:
    """A path or `sqlite:///path` -> SQLite; `postgresql://user:pw@host:port/db` -> PostgreSQL (psycopg 3)."""
    s = sa()
    if isinstance(location, os.PathLike) or (isinstance(location, str) and "://" not in location):
        text = os.fspath(location)
        if not text or text == ":memory:":
            raise InputError(f"store location must be a file path or a URL, got {text!r} "
                             "(an in-memory SQLite store is not supported: use a temporary file)")
        path = Path(text).expanduser().absolute()
        return Location("sqlite", s.engine.URL.create("sqlite+pysqlite", database=str(path)), path)
    if not isinstance(location, str):
        raise InputError(f"store location must be a path or a URL string, got {type(location).__name__}")
    try:
        url = s.engine.make_url(location)
    except s.exc.ArgumentError as error:
        raise InputError(f"store location {location.split('@')[-1]!r} is not a valid URL: {error}") from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise InputError(f"SQLite store URL needs a file path (sqlite:///path.db), got {url!s}")
        path = Path(url.database).expanduser().absolute()
        return Location("sqlite", url.set(drivername="sqlite+pysqlite", database=str(path)), path)
    if backend in ("postgresql", "postgres"):
        if not url.database:
            raise InputError(f"PostgreSQL store URL names no database: {url.render_as_string(hide_password=True)} "
                             "(expected postgresql://user:password@host:port/database)")
        return Location("postgresql", url.set(drivername="postgresql+psycopg"), None)
    raise InputError(f"store location {url.render_as_string(hide_password=True)!r}: unsupported backend "
                     f"{backend!r}; expected a file path, sqlite:///path.db or postgresql://user:pw@host/db")


def check_sqlite_path(path: Path) -> None:
    """Clear errors for paths SQLite would refuse with a bare 'unable to open database file'."""
    try:
        _check_sqlite_path(path)
    except OSError as error:  # e.g. a folder on the way that this user may not enter
        raise InputError(f"store path {path} cannot be reached: {error.strerror or error}") from None


def _check_sqlite_path(path: Path) -> None:
    if path.is_dir():
        raise InputError(f"store path {path} is a directory; expected a database file path (e.g. {path / 'users.db'})")
    parent = path.parent
    if not parent.is_dir():
        raise InputError(f"store path {path}: folder {parent} does not exist")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise InputError(f"store path {path} is read-only (the store needs read and write access)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"store path {path}: folder {parent} is read-only "
                         "(SQLite needs to write its -wal and -shm files beside the database)")


def create_engine(location: Location) -> Any:
    s = sa()
    if location.backend == "sqlite":
        engine = s.create_engine(location.url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})

        @s.event.listens_for(engine, "connect")
        def _connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # the "begin" listener below issues BEGIN itself
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: a killed process loses no commit
            cursor.execute("PRAGMA mmap_size = 268435456")  # reads map pages instead of copying them: bulk blob reads twice as fast
            cursor.close()

        @s.event.listens_for(engine, "begin")
        def _begin(connection: Any) -> None:
            write = connection.get_execution_options().get("personarag_write", False)
            connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine
    return s.create_engine(location.url, pool_pre_ping=True)


def lock_writer(connection: Any, backend: str) -> None:
    """Called first in every write transaction (SQLite already holds its lock from BEGIN IMMEDIATE)."""
    if backend == "postgresql":
        connection.execute(sa().text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_WRITER_LOCK})


def connect_error(location: Location, error: BaseException) -> InputError:
    """An InputError naming where the store is, never the password."""
    reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0] if str(error).strip() else repr(error)
    password = location.url.password
    if password:
        reason = reason.replace(str(password), "***")
    if location.backend == "postgresql":
        url = location.url
        return InputError(f"cannot connect to the PostgreSQL user store: database {url.database!r} on host "
                          f"{url.host or 'localhost'}:{url.port or 5432} as user {url.username!r} "
                          f"({location.display}): {reason}")
    return InputError(f"cannot open the SQLite user store at {location.path}: {reason}")


def init_schema(connection: Any, location: Location) -> None:
    """Create the tables in an empty database, or check the stored schema version (inside a write transaction)."""
    s = sa()
    t = tables()
    names = set(s.inspect(connection).get_table_names())
    where = location.path if location.path is not None else location.display
    if "pr_meta" not in names:
        ours = {name for name in names if name.startswith("pr_")}
        if location.backend == "sqlite" and names:
            raise InputError(f"{where} is a SQLite database but not a personarag user store "
                             f"(tables: {', '.join(sorted(names)[:8])}); choose another path")
        if ours:
            raise InputError(f"{where}: user-store tables {sorted(ours)} exist without pr_meta; "
                             "the store is damaged or from an unknown version")
        t["metadata"].create_all(connection)
        connection.execute(s.insert(t["meta"]).values(key="schema_version", value=str(SCHEMA_VERSION)))
        return
    row = connection.execute(s.select(t["meta"].c.value).where(t["meta"].c.key == "schema_version")).first()
    found = row[0] if row else None
    while found is not None and found.isdigit() and int(found) in _MIGRATIONS:
        step = int(found)
        for name in _MIGRATIONS[step]:
            t[name].create(connection, checkfirst=True)
        found = str(step + 1)
        connection.execute(s.update(t["meta"]).where(t["meta"].c.key == "schema_version").values(value=found))
        logger.info("user store %s: schema %d -> %s (added %s)", where, step, found, ", ".join(_MIGRATIONS[step]))
    if found != str(SCHEMA_VERSION):
        raise InputError(f"user store {where} has schema version {found}, this personarag reads schema version "
                         f"{SCHEMA_VERSION}; export it with the personarag that wrote it and import the JSONL here")
