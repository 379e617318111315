"""Line-by-line readers (text lines, JSON lines) whose errors name the file and the line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from personarag.errors import InputError, decode_utf8, lone_surrogate


def iter_lines(path: str | Path, what: str = "") -> Iterator[tuple[int, str]]:
    """Yield `(line_number, line)` for each non-blank line, without its line ending; line numbers
    start at 1. Invalid UTF-8 is an InputError naming the file and line; a leading byte-order mark
    is dropped. `what` names the file in the error when it does not exist ("qrels file")."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {path} does not exist".lstrip())
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            line = decode_utf8(raw, str(path), line_number).rstrip("\r\n")
            if line_number == 1:
                line = line.removeprefix("\ufeff")  # a byte-order mark some editors write
            if line.strip():
                yield line_number, line


def iter_jsonl(path: str | Path, what: str = "") -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield `(line_number, object)` for each non-blank line; line numbers start at 1."""
    path = Path(path)
    for line_number, line in iter_lines(path, what):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{path}:{line_number}: not valid JSON ({error.msg} at column {error.colno})") from None
        except (ValueError, RecursionError) as error:  # an integer over 4,300 digits; nesting too deep
            raise InputError(f"{path}:{line_number}: JSON not readable ({type(error).__name__}: {str(error)[:120]})") from None
        if not isinstance(record, dict):
            raise InputError(f"{path}:{line_number}: expected a JSON object, got {type(record).__name__}")
        yield line_number, record


def field_str(record: dict[str, Any], name: str, where: str, *, required: bool = True) -> str | None:
    """A string field; integer ids are accepted and turned into strings. Text that is not valid
    Unicode (a lone surrogate from a `\\ud800` escape) is refused here, naming the record."""
    if name not in record:
        if required:
            raise InputError(f"{where}: missing field {name!r} (fields present: {sorted(record)})")
        return None
    value = record[name]
    if value is None:
        if required:
            raise InputError(f"{where}: field {name!r} is null; expected a string")
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise InputError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
    bad = lone_surrogate(value)
    if bad is not None:
        owner = record.get("_id", record.get("id"))
        of = f" of {owner!r}" if isinstance(owner, (str, int)) and name not in ("_id", "id") else ""
        raise InputError(
            f"{where}: field {name!r}{of} contains a lone surrogate ({bad}), which is not Unicode text; "
            "remove or replace it in the file"
        )
    return value
