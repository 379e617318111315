"""What every run leaves beside its results: run names, library versions, output folders, files.

- `run_name(prefix, config)`: a stable name from a hash of the config, never the clock.
- `check_output_dir(path)`: refuse, before any loading or model work, a folder that is a
  file, cannot be written, or sits on a full disk.
- `prepare_output_dir(path, name, overwrite)`: refuse to mix this run's files with a
  different run's; when the only difference is the data read, say which part changed.
- `write_json` / `write_text`: written to a temporary file in the same folder, fsynced and
  renamed into place, so a kill never leaves a torn file.
- `FolderLock`: one run per output folder at a time; a lock left by a dead process is
  taken over.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from personarag.errors import InputError

try:
    import fcntl
except ImportError:  # Windows: pid liveness alone decides whether a lock is stale
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Distributions whose versions go into every run's config.json (those installed).
VERSIONED = (
    "personarag", "numpy", "bm25s", "PyStemmer", "rank_bm25", "ir_measures", "pytrec-eval-terrier",
    "torch", "transformers", "sentence-transformers", "faiss-cpu", "pyserini", "vllm", "peft", "trl",
)
LOCK_FILE = ".personarag.lock"
MIN_FREE_BYTES = 1 << 20
# config.json keys that describe a run's circumstances, not what it computes
NOT_IDENTITY = frozenset({"run_name", "versions", "batch_size", "max_examples", "output_dir"})


def digest(value: Any) -> str:
    """sha256 of the canonical JSON of `value` (keys sorted), first 16 hex digits."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def run_name(prefix: str, config: Mapping[str, Any]) -> str:
    """A stable name from the content of the config, never from the clock."""
    text = json.dumps(config, sort_keys=True, default=str)
    return f"{prefix}-{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:10]}"


def library_versions(extra: Iterable[str] = ()) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in (*VERSIONED, *extra):
        if name in versions:
            continue
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def check_output_dir(path: str | Path) -> Path:
    """The folder (created if needed) after checking it can take a run's files: not a file,
    writable, and with some free space. Call it before loading data or models."""
    out = Path(path).expanduser()
    for parent in (out, *out.parents):
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"output folder {out}: {parent} is a file, not a folder")
            break
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"output folder {out} cannot be created: {error.strerror or error}") from None
    try:
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-check-"):
            pass
    except OSError as error:
        raise InputError(f"output folder {out} is not writable: {error.strerror or error}") from None
    free = shutil.disk_usage(out).free
    if free < MIN_FREE_BYTES:
        raise InputError(f"output folder {out}: the disk is full ({free} bytes free)")
    return out


def _changed_data(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The data parts (with their source) whose content differs between two configs."""
    old_data, new_data = old.get("data") or {}, new.get("data") or {}
    changed = []
    for part in sorted(set(old_data) | set(new_data)):
        before, after = old_data.get(part) or {}, new_data.get(part) or {}
        if before.get("sha256") != after.get("sha256"):
            source = after.get("source") or before.get("source")
            changed.append(f"{part} ({source})" if source else part)
    return changed


def prepare_output_dir(path: str | Path, name: str, overwrite: bool, config: Mapping[str, Any] | None = None) -> Path:
    """Create OUT, refusing to mix this run's files with those of a different run.

    With `config` (this run's config.json content), a refusal caused only by changed
    data names the parts that changed and their files."""
    out = Path(path)
    previous = out / "config.json"
    if previous.is_file() and not overwrite:
        try:
            old = json.loads(previous.read_text(encoding="utf-8"))
            old_name = old.get("run_name")
        except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
            old, old_name = {}, None
        if old_name != name:
            changed = _changed_data(old, config) if config is not None else []
            same_otherwise = config is not None and _identity(old) == _identity(config)
            if same_otherwise and "data" not in old and (config or {}).get("data"):
                raise InputError(
                    f"{out} holds a run of the same config recorded without data hashes (by an older personarag), "
                    "so whether its data is the same cannot be told; pass --overwrite to redo it"
                )
            if changed and same_otherwise:
                raise InputError(
                    f"{out} holds a run of the same config on other data: changed since then: "
                    f"{', '.join(changed)}; pass --overwrite (overwrite=True) to start again on the new data, "
                    "or choose another output folder"
                )
            raise InputError(
                f"{out} holds the results of a different run ({old_name or 'unreadable config.json'}, this one is "
                f"{name}); pass --overwrite to replace them, or choose another --output-dir"
            )
    elif not previous.exists() and not overwrite and any((out / f).exists() for f in ("run.trec", "metrics.json")):
        raise InputError(f"{out} holds results without a config.json; pass --overwrite to replace them")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _identity(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in NOT_IDENTITY and k != "data"}


def temp_path(path: str | Path) -> Path:
    """A fresh name beside `path` for a file to be renamed onto it (created with the usual
    permissions, unlike mkstemp's 0600)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def write_text(path: str | Path, text: str) -> Path:
    """Write through a temporary file in the same folder, fsync, then rename into place."""
    path = Path(path)
    temp = temp_path(path)
    try:
        with open(temp, "x", encoding="utf-8", newline="\n") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def batched(items: Sequence[T], size: int) -> Iterator[list[T]]:
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise InputError(f"batch size must be a positive integer, got {size!r}")
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


_HELD: dict[Path, list[Any]] = {}  # lock path -> [handle, holders] within this process


class FolderLock:
    """An exclusive lock on an output folder for the life of a run (a context manager).

    The lock file holds the owner's pid. Where `fcntl` exists the kernel lock decides (it
    vanishes with its process, so a dead run's lock is always taken over); elsewhere a lock
    whose pid is no longer alive is taken over. Within one process the lock is re-entrant
    (a command may take it before loading data, then the runner takes it again)."""

    def __init__(self, folder: str | Path) -> None:
        self.path = (Path(folder) / LOCK_FILE).resolve()
        self._held = False

    def acquire(self) -> FolderLock:
        if self.path in _HELD:
            _HELD[self.path][1] += 1
            self._held = True
            return self
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held until release)
        handle.seek(0)
        owner = handle.read().strip()
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                raise InputError(self._busy(owner)) from None
        elif owner.isdigit() and int(owner) != os.getpid() and pid_alive(int(owner)):
            handle.close()
            raise InputError(self._busy(owner))
        if owner and owner != str(os.getpid()):
            logger.warning("%s: taking over the lock of process %s, which is no longer running", self.path.parent, owner)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        _HELD[self.path] = [handle, 1]
        self._held = True
        return self

    def _busy(self, owner: str) -> str:
        who = f"process {owner}" if owner else "another process"
        return (
            f"{self.path.parent} is in use by a run of {who} (lock {self.path}); wait for it to finish, "
            "or choose another output folder"
        )

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        entry = _HELD[self.path]
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _HELD[self.path]
        handle = entry[0]
        try:
            handle.seek(0)
            handle.truncate()
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            handle.close()

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
