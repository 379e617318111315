"""The frozen dataclasses that flow between stages.

Everything is keyed by ids: results are never matched back to documents by text.
Per-stage traces (usage, problems, reasoning) ride on the results, not in globals.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from personarag.errors import InputError

V = TypeVar("V")


def check_id(value: object, what: str) -> str:
    """`value` when it is a non-empty string, as every id must be; an InputError naming `what` otherwise."""
    if not isinstance(value, str) or not value:
        raise InputError(f"{what} must be a non-empty string, got {value!r}")
    return value


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    title: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        check_id(self.id, "Document id")
        if not isinstance(self.text, str):
            raise InputError(f"Document {self.id!r}: text must be a string, got {type(self.text).__name__}")

    @property
    def full_text(self) -> str:
        """Title and body as one string, the form most retrievers index."""
        return f"{self.title}\n{self.text}" if self.title else self.text


@dataclass(frozen=True)
class User:
    id: str
    history: tuple[Document, ...] = ()

    def __post_init__(self) -> None:
        check_id(self.id, "User id")
        object.__setattr__(self, "history", tuple(self.history))


@dataclass(frozen=True)
class Query:
    id: str
    text: str
    user: User | None = None
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        check_id(self.id, "Query id")
        if not isinstance(self.text, str) or not self.text.strip():
            raise InputError(f"Query {self.id!r}: text must be a non-empty string, got {self.text!r}")


@dataclass(frozen=True)
class Usage:
    """LLM accounting: summed across calls with `+`."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    cached_calls: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            calls=self.calls + other.calls,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            seconds=self.seconds + other.seconds,
            cached_calls=self.cached_calls + other.cached_calls,
        )

    @classmethod
    def total(cls, usages: Iterable[Usage]) -> Usage:
        out = cls()
        for usage in usages:
            out = out + usage
        return out


@dataclass(frozen=True)
class StageTrace:
    """What one stage did to one query: its name, LLM usage, problems met, free-form info."""

    stage: str
    usage: Usage = Usage()
    problems: tuple[str, ...] = ()
    reasoning: str | None = None
    info: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)


class ScoredDoc(NamedTuple):
    """A document with its score (and reasoning, when a reranker gave one).

    Immutable like the dataclasses here, but a NamedTuple: retrievers build one per hit,
    hundreds of thousands per batch at depth 1000, and a tuple is built in half the time.
    """

    doc: Document
    score: float
    reasoning: str | None = None

    @property
    def id(self) -> str:
        return self.doc.id


@dataclass(frozen=True)
class Ranking:
    """An ordered candidate list for one query, best first, with the traces of the stages that made it."""

    query: Query
    docs: tuple[ScoredDoc, ...]
    trace: tuple[StageTrace, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "docs", tuple(self.docs))
        object.__setattr__(self, "trace", tuple(self.trace))

    @property
    def ids(self) -> list[str]:
        return [d.doc.id for d in self.docs]

    @property
    def scores(self) -> list[float]:
        """The docs' scores, in rank order (with `ids`: the run, without touching the documents)."""
        return [d.score for d in self.docs]

    @property
    def reasoned(self) -> tuple[ScoredDoc, ...]:
        """The docs that carry reasoning."""
        return tuple(d for d in self.docs if d.reasoning)

    def top(self, k: int) -> Ranking:
        return dataclasses.replace(self, docs=self.docs[:k])

    def with_stage(self, docs: Sequence[ScoredDoc], trace: StageTrace) -> Ranking:
        return Ranking(query=self.query, docs=tuple(docs), trace=self.trace + (trace,))

    @property
    def usage(self) -> Usage:
        return Usage.total(t.usage for t in self.trace)


@dataclass(frozen=True)
class Output:
    query: Query
    text: str
    context: tuple[ScoredDoc, ...] = ()
    trace: tuple[StageTrace, ...] = ()
    prompt: str | None = None

    @property
    def usage(self) -> Usage:
        return Usage.total(t.usage for t in self.trace)


class KeyedTable(Mapping[str, V]):
    """A read-only mapping over `self._data` (a dict, in insertion order): iteration and length;
    subclasses fill `_data` and define `__getitem__` (a value, a copy or a read-only view)."""

    _data: dict[str, Any]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


class Corpus(KeyedTable[Document]):
    """An ordered, validated id -> Document mapping. Refuses empty corpora and duplicate ids."""

    def __init__(self, documents: Iterable[Document], *, source: str = "corpus") -> None:
        docs: dict[str, Document] = {}
        for position, doc in enumerate(documents):
            if not isinstance(doc, Document):
                raise InputError(f"{source}: item {position} is a {type(doc).__name__}, expected Document")
            if doc.id in docs:
                raise InputError(f"{source}: duplicate document id {doc.id!r} (item {position})")
            docs[doc.id] = doc
        if not docs:
            raise InputError(f"{source}: the corpus is empty; at least one document is needed")
        self._data = docs

    def __getitem__(self, doc_id: str) -> Document:
        return self._data[doc_id]

    @property
    def ids(self) -> list[str]:
        return list(self._data)

    def documents(self) -> list[Document]:
        return list(self._data.values())

    def __repr__(self) -> str:
        return f"Corpus({len(self)} documents)"


def as_corpus(documents: Corpus | Iterable[Document]) -> Corpus:
    return documents if isinstance(documents, Corpus) else Corpus(documents)
