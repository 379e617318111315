"""User histories indexed once, restricted per user: the shared machinery of the history
and collaborative retrievers.

`ProfileStore` (profile_store.py) keeps each user's current history once, as a contiguous
block of rows; a changed history replaces the user's block. `ProfileBM25` (profile_bm25.py)
computes BM25 with statistics (idf, avgdl) over one user's rows only -- the statistics of
the LaMP / CFRAG reference code, which builds a `rank_bm25.BM25Okapi` over each profile for
every query -- without rebuilding anything per query. `ItemEmbeddings` encodes each history
item once. This module also holds the tokenizers and re-exports those classes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence

import numpy as np

from personarag.errors import InputError
from personarag.personal.dates import sort_dates
from personarag.personal.profile_bm25 import ProfileBM25
from personarag.personal.profile_store import ProfileStore, UserKey, user_key
from personarag.types import User

# imported from here by the history, collaborative and user-embedding modules
__all__ = ["ItemEmbeddings", "ProfileBM25", "ProfileStore", "UserKey", "make_tokenizer", "normalize",
           "sort_dates", "tokenizer_name", "user_key"]

logger = logging.getLogger(__name__)

_WORD = re.compile(r"\w+", re.UNICODE)

TOKENIZERS = ("split", "words")


def tokenizer_name(name: str, stemmer: str | None = None) -> str:
    """What `make_tokenizer(name, stemmer)` is called in a token cache: "split", "words+english"."""
    return name if stemmer is None else f"{name}+{stemmer}"


def make_tokenizer(name: str, stemmer: str | None = None) -> Callable[[str], list[str]]:
    """`split`: `str.split()`, what the LaMP reference code feeds rank_bm25 (case kept);
    `words`: lowercased `\\w+` tokens. `stemmer` (a PyStemmer language, e.g. "english")
    stems the tokens of either."""
    if name == "split":
        base: Callable[[str], list[str]] = str.split
    elif name == "words":
        def base(text: str) -> list[str]:
            return _WORD.findall(text.lower())
    else:
        raise InputError(f"unknown tokenizer {name!r}; valid: {', '.join(TOKENIZERS)}")
    if stemmer is None:
        return base
    from personarag.retrievers.tokenization import make_stemmer  # PyStemmer is a core dependency

    stem = make_stemmer(stemmer).stemWords

    def stemmed(text: str) -> list[str]:
        return stem(base(text))

    return stemmed


class ItemEmbeddings:
    """Unit-normalised embeddings of stored rows; a text already embedded (in another row, or
    in a history the store retired and took back) is copied, not encoded again."""

    def __init__(self, store: ProfileStore, encode: Callable[[Sequence[str]], np.ndarray]) -> None:
        self.store = store
        self.encode = encode
        self._blocks: list[np.ndarray] = []
        self._matrix: np.ndarray | None = None
        self._n = 0
        self._generation = store.generation
        self._row_of: dict[tuple[str | None, str], int] = {}  # (title, text) -> a row holding it

    def sync(self) -> None:
        remap = self.store.remap_since(self._generation)
        if remap is not None:  # the store dropped retired rows: keep the embeddings of the rest
            kept = remap[1]
            self._matrix = self._concatenated()[kept[kept < self._n]]
            self._blocks, self._n = [self._matrix], int((kept < self._n).sum())
            self._generation = self.store.generation
            self._row_of = {(d.title, d.text): i for i, d in enumerate(self.store.items[: self._n])}
        if self._n == len(self.store.items):
            return
        docs = self.store.items[self._n:]
        keys = [(d.title, d.text) for d in docs]
        fresh: dict[tuple[str | None, str], int] = {}  # new texts, each once, in order
        for key in keys:
            if key not in self._row_of:
                fresh.setdefault(key, len(fresh))
        encoded = np.zeros((0, 0), np.float32)
        if fresh:
            texts = [f"{title}\n{text}" if title else text for title, text in fresh]  # Document.full_text
            encoded = normalize(np.asarray(self.encode(texts), dtype=np.float32))
        if len(fresh) == len(keys):
            block = encoded
        else:
            old = self._concatenated()
            dim = old.shape[1] if old.size else encoded.shape[1]
            block = np.empty((len(keys), dim), dtype=np.float32)
            for i, key in enumerate(keys):
                block[i] = encoded[fresh[key]] if key in fresh else old[self._row_of[key]]
        for i, key in enumerate(keys):
            self._row_of.setdefault(key, self._n + i)
        self._blocks.append(block)
        self._n = len(self.store.items)
        self._matrix = None

    def _concatenated(self) -> np.ndarray:
        if not self._blocks:
            return np.zeros((0, 0), np.float32)
        if self._matrix is None:
            self._matrix = np.concatenate(self._blocks)
            self._blocks = [self._matrix]
        return self._matrix

    @property
    def matrix(self) -> np.ndarray:
        self.sync()
        return self._concatenated()

    def of(self, user: User) -> np.ndarray:
        rows = self.store.rows(user)  # first: it may store the history (and compact)
        return self.matrix[rows]


def normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
