"""Documents saved beside an index: a JSONL file read back whole, or lazily by byte offset (mmap).

Indexes map hits to positions; this store turns positions back into `Document`s, so a
loaded index answers with the same documents it was built from.
"""

from __future__ import annotations

import json
import mmap
from collections.abc import Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from personarag.errors import InputError
from personarag.types import Document

DOCUMENTS_FILE = "documents.jsonl"
OFFSETS_FILE = "documents.offsets.npy"


def save_documents(documents: Sequence[Document], directory: Path) -> None:
    """Write `documents.jsonl` (one document a line) and the byte offset of each line."""
    offsets = [0]
    with open(directory / DOCUMENTS_FILE, "wb") as out:
        for doc in documents:
            record = {"id": doc.id, "title": doc.title, "text": doc.text, "meta": dict(doc.meta)}
            try:
                line = json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n"
            except TypeError as error:
                raise InputError(
                    f"document {doc.id!r}: its meta cannot be saved as JSON ({error}); keep meta to plain values"
                ) from None
            out.write(line)
            offsets.append(offsets[-1] + len(line))
    np.save(directory / OFFSETS_FILE, np.asarray(offsets, dtype=np.int64))


def _to_document(line: bytes | str, where: str) -> Document:
    try:
        record = json.loads(line)
        return Document(id=record["id"], text=record["text"], title=record.get("title"), meta=record.get("meta") or {})
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(f"{where}: not a saved document ({error})") from None


def load_documents(directory: Path, *, lazy: bool) -> Sequence[Document]:
    """All documents in order: a list, or (lazy) a sequence that parses each line on access."""
    path = directory / DOCUMENTS_FILE
    if not path.is_file():
        raise InputError(f"{directory} has no {DOCUMENTS_FILE}; is it a saved personarag index?")
    if lazy:
        return LazyDocuments(path, np.load(directory / OFFSETS_FILE, mmap_mode="r"))
    with open(path, encoding="utf-8") as lines:
        return [_to_document(line, f"{path}, line {number}") for number, line in enumerate(lines, 1)]


class LazyDocuments(Sequence[Document]):
    """Documents memory-mapped from a JSONL file; only the ones asked for are parsed."""

    def __init__(self, path: Path, offsets: np.ndarray) -> None:
        self.path = path
        self._offsets = offsets
        self._file = open(path, "rb")  # noqa: SIM115 - lives as long as the store
        size = path.stat().st_size
        self._map: Any = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        if len(offsets) < 1 or int(offsets[-1]) != size:
            raise InputError(f"{path}: offsets do not match the file ({int(offsets[-1])} vs {size} bytes); re-save it")

    def __len__(self) -> int:
        return len(self._offsets) - 1

    @overload
    def __getitem__(self, index: int) -> Document: ...
    @overload
    def __getitem__(self, index: slice) -> list[Document]: ...
    def __getitem__(self, index: int | slice) -> Document | list[Document]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        position = int(index) + n if int(index) < 0 else int(index)
        if not 0 <= position < n:
            raise IndexError(f"document position {index} out of range for {n} documents")
        start, end = int(self._offsets[position]), int(self._offsets[position + 1])
        return _to_document(self._map[start:end], f"{self.path}, line {position + 1}")

    def __del__(self) -> None:
        try:
            if isinstance(self._map, mmap.mmap):
                self._map.close()
            self._file.close()
        except (AttributeError, ValueError, BufferError):
            pass
