"""Exceptions and the optional-dependency helper.

Heavy libraries are imported on first use through `require`, which names the extra
to install when the module is missing.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class PersonaragError(Exception):
    """Base class of the toolkit's own errors."""


class InputError(PersonaragError, ValueError):
    """Bad user input: says what was expected, what came, and where."""


class UnknownSpecError(PersonaragError, KeyError):
    """A spec string or backend name that is not registered; lists the valid ones."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class MissingExtraError(PersonaragError, ImportError):
    """An optional dependency is not installed; names the extra that provides it."""


def require(module: str, extra: str, *, purpose: str | None = None) -> ModuleType:
    """Import `module`, or raise MissingExtraError naming `pip install "personarag[extra]"`.

    Only a missing `module` (or one of its parents) is translated; an ImportError raised
    inside an installed module propagates unchanged, so real bugs stay visible.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        missing = error.name or ""
        if missing and not (module == missing or module.startswith(missing + ".")):
            raise
        what = f" for {purpose}" if purpose else ""
        raise MissingExtraError(
            f"{module!r} is needed{what} but is not installed; "
            f'install it with: pip install "personarag[{extra}]"'
        ) from error


def decode_utf8(data: bytes, source: str, first_line: int = 1) -> str:
    """`data` as UTF-8 text, or an InputError naming `source`, the line and the column of the first bad byte.

    `first_line` is the line number of `data`'s first line (for one line of a bigger file).
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = first_line + data.count(b"\n", 0, error.start)
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise InputError(
            f"{source}:{line}: not valid UTF-8 (byte {data[error.start]:#04x} at column {column}); "
            "the file must be UTF-8 text"
        ) from None


def lone_surrogate(text: str) -> str | None:
    """The first lone surrogate in `text` as an escape (`\\ud800`), or None when `text` is valid Unicode.

    JSON can carry one (`"\\ud800"`); it cannot be encoded, so it would break every later step
    (cache keys, tokenizers, output files) far from the file it came from.
    """
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return f"\\u{ord(text[error.start]):04x}"
    return None
