"""Relevance judgements: query id -> {doc id: relevance}.

Reads BEIR qrels (`query-id<TAB>corpus-id<TAB>score`, a header line, any line endings)
and TREC qrels (`qid iter docid rel`, whitespace separated).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType

from personarag.errors import InputError
from personarag.evaluation.jsonl import iter_lines
from personarag.evaluation.tables import QueryTable

logger = logging.getLogger(__name__)

# pytrec_eval keeps grades in a C integer: larger ones fail inside it with a SystemError.
MIN_GRADE, MAX_GRADE = -(2**31), 2**31 - 1


class Qrels(QueryTable[Mapping[str, int]]):
    """Judged queries in first-seen order, each with its judged documents and their relevance."""

    def __init__(self, judgements: Mapping[str, Mapping[str, int]], *, source: str = "qrels") -> None:
        data: dict[str, dict[str, int]] = {}
        for query_id, docs in judgements.items():
            if not isinstance(query_id, str) or not query_id:
                raise InputError(f"{source}: query ids must be non-empty strings, got {query_id!r}")
            row: dict[str, int] = {}
            for doc_id, relevance in docs.items():
                if not isinstance(doc_id, str) or not doc_id:
                    raise InputError(f"{source}: query {query_id!r}: doc ids must be non-empty strings, got {doc_id!r}")
                if isinstance(relevance, bool) or not isinstance(relevance, int):
                    raise InputError(
                        f"{source}: query {query_id!r}, doc {doc_id!r}: relevance must be an int, got {relevance!r}"
                    )
                if not MIN_GRADE <= relevance <= MAX_GRADE:
                    raise InputError(
                        f"{source}: query {query_id!r}, doc {doc_id!r}: relevance {relevance} is out of range; "
                        f"grades must be integers in {MIN_GRADE}..{MAX_GRADE}"
                    )
                row[doc_id] = relevance
            if row:
                data[query_id] = row
        self._data = data
        self.source = source

    @classmethod
    def read(cls, path: str | Path) -> Qrels:
        """BEIR tsv (with header) or TREC qrels; the format is told from the number of columns."""
        path = Path(path)
        data: dict[str, dict[str, int]] = {}
        duplicates = 0
        columns: int | None = None
        for line_number, line in iter_lines(path, "qrels file"):
            fields = line.split("\t") if "\t" in line else line.split()
            fields = [f.strip() for f in fields]
            if columns is None:
                if len(fields) not in (3, 4):
                    raise InputError(
                        f"{path}:{line_number}: expected 3 columns (BEIR: query-id, corpus-id, score) or "
                        f"4 (TREC: qid, iter, docid, rel), got {len(fields)}: {line!r}"
                    )
                columns = len(fields)
                if not is_number(fields[-1]):  # a header line ("score"); "0.5" is a bad grade, not a header
                    continue
            if len(fields) != columns:
                raise InputError(f"{path}:{line_number}: expected {columns} columns, got {len(fields)}: {line!r}")
            query_id, doc_id = fields[0], fields[1 if columns == 3 else 2]
            relevance = _parse_int(fields[-1])
            if relevance is None:
                raise InputError(f"{path}:{line_number}: relevance must be an integer, got {fields[-1]!r}")
            if not MIN_GRADE <= relevance <= MAX_GRADE:
                raise InputError(
                    f"{path}:{line_number}: relevance {fields[-1]} is out of range; "
                    f"grades must be integers in {MIN_GRADE}..{MAX_GRADE}"
                )
            if not query_id or not doc_id:
                raise InputError(f"{path}:{line_number}: empty query or document id: {line!r}")
            row = data.setdefault(query_id, {})
            if doc_id in row:
                duplicates += 1
            row[doc_id] = relevance
        if not data:
            raise InputError(f"{path}: no judgements found")
        if duplicates:
            logger.warning("%s: %d duplicate (query, doc) judgements; the last one of each was kept", path, duplicates)
        return cls(data, source=str(path))

    @classmethod
    def from_triples(cls, triples: Iterable[tuple[str, str, int]], *, source: str = "qrels") -> Qrels:
        data: dict[str, dict[str, int]] = {}
        for query_id, doc_id, relevance in triples:
            data.setdefault(query_id, {})[doc_id] = relevance
        return cls(data, source=source)

    def write(self, path: str | Path) -> Path:
        """BEIR tsv with a header."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8", newline="\n") as handle:
            handle.write("query-id\tcorpus-id\tscore\n")
            for query_id, docs in self._data.items():
                for doc_id, relevance in docs.items():
                    handle.write(f"{query_id}\t{doc_id}\t{relevance}\n")
        return path

    def __getitem__(self, query_id: str) -> Mapping[str, int]:
        return MappingProxyType(self._data[query_id])

    @property
    def num_judgements(self) -> int:
        return sum(len(docs) for docs in self._data.values())

    def relevant(self, query_id: str, min_relevance: int = 1) -> list[str]:
        return [doc for doc, rel in self._data.get(query_id, {}).items() if rel >= min_relevance]

    def doc_ids(self) -> set[str]:
        return {doc for docs in self._data.values() for doc in docs}

    def to_dict(self) -> dict[str, dict[str, int]]:
        return {query_id: dict(docs) for query_id, docs in self._data.items()}

    def subset(self, query_ids: Iterable[str]) -> Qrels:
        keep = set(query_ids)
        return Qrels({q: d for q, d in self._data.items() if q in keep}, source=self.source)

    def __repr__(self) -> str:
        return f"Qrels({len(self)} queries, {self.num_judgements} judgements, from {self.source})"


def is_number(text: str) -> bool:
    """Whether `float(text)` reads it."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse_int(text: str) -> int | None:
    """An integer grade ("2", "2.0", "1e3"); None for anything else (fractions, nan, inf, words)."""
    try:
        if len(text) <= 50:  # int() refuses more than 4,300 digits; float() reads any length
            return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() else None
