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
    """Unit-normalised embeddings of stored rows, each row encoded once."""

    def __init__(self, store: ProfileStore, encode: Callable[[Sequence[str]], np.ndarray]) -> None:
        self.store = store
        self.encode = encode
        self._blocks: list[np.ndarray] = []
        self._matrix: np.ndarray | None = None
        self._n = 0
        self._generation = store.generation

    def sync(self) -> None:
        remap = self.store.remap_since(self._generation)
        if remap is not None:  # the store dropped retired rows: keep the embeddings of the rest
            kept = remap[1]
            self._matrix = self._concatenated()[kept[kept < self._n]]
            self._blocks, self._n = [self._matrix], int((kept < self._n).sum())
            self._generation = self.store.generation
        if self._n == len(self.store.items):
            return
        texts = [d.full_text for d in self.store.items[self._n:]]
        self._blocks.append(normalize(np.asarray(self.encode(texts), dtype=np.float32)))
        self._n = len(self.store.items)
        self._matrix = None

    def _concatenated(self) -> np.ndarray:
        if self._matrix is None:
            self._matrix = np.concatenate(self._blocks) if self._blocks else np.zeros((0, 0), np.float32)
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
