"""Per-query result files: JSON lines appended and flushed as each query finishes.

A run killed mid-write leaves at most a torn last line (possibly cut inside a multi-byte
character); reading drops it, so a rerun redoes that query. Any other damaged line is an
error that names the file and the line.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from personarag.errors import InputError
from personarag.resources import Closeable

logger = logging.getLogger(__name__)


def read_records(path: str | Path, keep: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """id -> record of the complete lines of `path` (in file order); when anything is dropped
    (a torn last line, or ids not in `keep`) the file is rewritten without it."""
    path = Path(path)
    if not path.is_file():
        return {}
    data = path.read_bytes()
    keep_set = set(keep) if keep is not None else None
    lines = data.split(b"\n")
    complete, tail = lines[:-1], lines[-1]  # `tail` is what follows the last newline: torn or empty
    records: dict[str, dict[str, Any]] = {}
    good: list[bytes] = []
    dropped = bool(tail.strip())
    if dropped:
        logger.warning("%s: dropping an incomplete last line (the run was stopped while writing it)", path)
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            if number == len(complete) and not tail.strip():
                logger.warning("%s: dropping a damaged last line", path)
                dropped = True
                break
            raise InputError(f"{path}:{number}: not valid JSON; the file is damaged, rerun with --overwrite") from None
        if not isinstance(record, dict) or not isinstance(record.get("id"), str):
            raise InputError(f"{path}:{number}: expected an object with a string 'id'")
        if keep_set is not None and record["id"] not in keep_set:
            dropped = True
            continue
        records[record["id"]] = record
        good.append(line + b"\n")
    if dropped:
        temp = path.with_name(path.name + ".tmp")
        temp.write_bytes(b"".join(good))
        os.replace(temp, path)
    return records


class ResultLog(Closeable):
    """Appends records to one JSONL file; each `append` is flushed and fsynced before it returns."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._handle = self.path.open("a", encoding="utf-8", newline="\n")

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        for record in records:
            self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()
