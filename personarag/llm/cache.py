"""A persistent LLM request cache: one append-only JSONL file with a checksum on every line.

Why this format rather than SQLite: a crash or a damaged disk can only spoil the lines it
touched. Every line is `CHECKSUM JSON\\n`; a line whose checksum does not match, or that
lacks its newline (a writer died mid-line), is skipped with a warning and every other
entry stays readable. Writers append under an exclusive `fcntl` lock, so concurrent
processes sharing one directory lose nothing; readers index the file by byte offset and
read newly appended lines (from other processes) when a key is missed.

Keys are hex digests computed by `request_key` from everything that changes an answer:
backend, model, chat messages, operation, generation parameters or candidate answers,
and the backend's `extra_key()`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from personarag.errors import InputError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one process per cache directory there
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

CACHE_FILE = "llm-cache.jsonl"
ENV_VAR = "PERSONARAG_CACHE_DIR"


def resolve_cache_dir(cache_dir: str | os.PathLike | None) -> Path | None:
    """`"auto"` means `$PERSONARAG_CACHE_DIR/llm` when that variable is set, else no cache."""
    if cache_dir is None:
        return None
    if isinstance(cache_dir, str) and cache_dir == "auto":
        root = os.environ.get(ENV_VAR, "").strip()
        return Path(root).expanduser() / "llm" if root else None
    return Path(cache_dir).expanduser()


def request_key(payload: Mapping[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (e.g. from a "\\ud800" escape); valid text keeps its old key
        data = text.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()


def _json_line(key: str, value: Any) -> bytes:
    record = {"k": key, "v": value}
    try:
        return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates are written as JSON escapes, which read back the same
        return json.dumps(record, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _checksum(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:16]


class LLMCache:
    """Key -> JSON value store shared by every LLM backend (and every process) using `directory`."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self.path = self.directory / CACHE_FILE
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab"):  # creates it, and proves we may append to it
                pass
        except OSError as error:
            raise InputError(
                f"LLM cache folder {self.directory} is not usable ({error.strerror or error}): it must be a "
                "folder this process can create and write; pass another cache_dir, or cache_dir=None to turn "
                "caching off"
            ) from error
        self._index: dict[str, tuple[int, int]] = {}  # key -> (offset of the JSON body, length)
        self._offset = 0  # bytes of the file already indexed (always at a line start)
        self._bad_lines = 0
        self._lock = threading.Lock()  # threads of one process; fcntl covers other processes
        self._refresh()

    @contextmanager
    def _file_lock(self, handle: Any, exclusive: bool) -> Iterator[None]:
        if fcntl is None:
            yield
            return
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _refresh(self) -> None:
        """Index the complete lines appended since the last look, one line in memory at a time."""
        bad_before = self._bad_lines
        with open(self.path, "rb") as handle, self._file_lock(handle, exclusive=False):
            handle.seek(self._offset)
            for line in handle:
                if not line.endswith(b"\n"):  # an unfinished last line waits for its newline
                    break
                self._index_line(line[:-1], self._offset)
                self._offset += len(line)
        if self._bad_lines > bad_before:
            logger.warning(
                "LLM cache %s: skipped %d damaged line(s); the other entries are intact",
                self.path,
                self._bad_lines - bad_before,
            )

    def _index_line(self, line: bytes, offset: int) -> None:
        checksum, _, body = line.partition(b" ")
        if not body or _checksum(body) != checksum.decode("ascii", "replace"):
            if line.strip():
                self._bad_lines += 1
            return
        try:
            key = json.loads(body)["k"]
        except (ValueError, KeyError, TypeError):
            self._bad_lines += 1
            return
        self._index[key] = (offset + len(checksum) + 1, len(body))

    def _read(self, handle: Any, key: str) -> Any | None:
        offset, length = self._index[key]
        handle.seek(offset)
        body = handle.read(length)
        try:
            return json.loads(body)["v"]
        except (ValueError, KeyError):  # the file was replaced under us; treat as a miss
            logger.warning("LLM cache %s: entry at byte %d is unreadable; recomputing it", self.path, offset)
            return None

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The cached values of those `keys` that are present."""
        keys = list(keys)
        with self._lock:
            if any(k not in self._index for k in keys):
                self._refresh()
            found = {}
            present = [k for k in keys if k in self._index]
            if present:
                with open(self.path, "rb") as handle:
                    for key in present:
                        value = self._read(handle, key)
                        if value is not None:
                            found[key] = value
            return found

    def get(self, key: str) -> Any | None:
        return self.get_many([key]).get(key)

    def put_many(self, items: Mapping[str, Any]) -> None:
        if not items:
            return
        lines = []
        for key, value in items.items():
            body = _json_line(key, value)
            lines.append(_checksum(body).encode("ascii") + b" " + body + b"\n")
        with self._lock, open(self.path, "ab") as handle, self._file_lock(handle, exclusive=True):
            handle.seek(0, os.SEEK_END)
            if handle.tell() > 0:
                with open(self.path, "rb") as reader:
                    reader.seek(-1, os.SEEK_END)
                    if reader.read(1) != b"\n":  # a writer died mid-line: end its line so ours stays whole
                        handle.write(b"\n")
            handle.write(b"".join(lines))
            handle.flush()
            os.fsync(handle.fileno())

    def put(self, key: str, value: Any) -> None:
        self.put_many({key: value})

    def __len__(self) -> int:
        with self._lock:
            self._refresh()
            return len(self._index)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and bool(self.get_many([key]))


_OPEN: dict[Path, LLMCache] = {}
_OPEN_LOCK = threading.Lock()


def open_cache(directory: str | os.PathLike) -> LLMCache:
    """One LLMCache object per directory and process, shared by all LLMs that use it."""
    path = Path(directory).expanduser().resolve()
    with _OPEN_LOCK:
        if path not in _OPEN:
            _OPEN[path] = LLMCache(path)
        return _OPEN[path]
