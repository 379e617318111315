"""User histories indexed once, restricted per user: the shared machinery of the history
and collaborative retrievers.

`ProfileStore` keeps every distinct history it has seen exactly once, as a contiguous
block of rows (keyed by user id and history ids, so two users that share an id but not a
history never mix). `ProfileBM25` holds one global term-frequency matrix over those rows and
computes BM25 with statistics (idf, avgdl) over one user's rows only -- the statistics of
the LaMP / CFRAG reference code, which builds a `rank_bm25.BM25Okapi` over each profile for
every query -- without rebuilding anything per query. `ItemEmbeddings` encodes each history
item once.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from personarag.errors import InputError, require
from personarag.types import Document, User

if TYPE_CHECKING:
    from scipy.sparse import csc_matrix

logger = logging.getLogger(__name__)

UserKey = tuple[str, tuple[str, ...]]
_WORD = re.compile(r"\w+", re.UNICODE)

TOKENIZERS = ("split", "words")


def user_key(user: User) -> UserKey:
    return (user.id, tuple(d.id for d in user.history))


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
    stem = require("Stemmer", "base", purpose="stemming").Stemmer(stemmer).stemWords

    def stemmed(text: str) -> list[str]:
        return stem(base(text))

    return stemmed


class ProfileStore:
    """Every distinct history seen, stored once; `rows(user)` is that history's block of rows."""

    def __init__(self) -> None:
        self.items: list[Document] = []
        self.owners: list[str] = []  # user id of each row
        self._blocks: dict[UserKey, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, user: User) -> bool:
        return user_key(user) in self._blocks

    def add(self, users: Iterable[User]) -> int:
        """Store the histories not stored yet; returns how many rows were added."""
        before = len(self.items)
        for user in users:
            key = user_key(user)
            if key in self._blocks:
                continue
            start = len(self.items)
            self.items.extend(user.history)
            self.owners.extend([user.id] * len(user.history))
            self._blocks[key] = (start, len(self.items))
        return len(self.items) - before

    def rows(self, user: User) -> slice:
        key = user_key(user)
        if key not in self._blocks:
            self.add([user])
        start, stop = self._blocks[key]
        return slice(start, stop)


class _UserStats:
    """BM25 statistics of one user's rows: per-term idf and the tf part of each posting."""

    __slots__ = ("columns", "idf", "postings")

    def __init__(self, columns: dict[int, int], idf: np.ndarray, postings: csc_matrix) -> None:
        self.columns = columns  # global term column -> local column
        self.idf = idf
        self.postings = postings  # n_rows x n_local_terms, holding tf*(k1+1)/(tf+k1*norm)


class ProfileBM25:
    """BM25Okapi (rank_bm25's formula: idf floored at epsilon * mean idf) per user history.

    One sparse term-frequency matrix over all stored rows is built as rows arrive; a user's
    statistics are computed from their slice on first use and cached. Scores equal
    `rank_bm25.BM25Okapi(tokenized history, k1, b, epsilon).get_scores(tokenized query)`
    bit for bit (same operations in the same order, idf with `math.log`)."""

    def __init__(self, store: ProfileStore, tokenizer: Callable[[str], list[str]], *,
                 k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25) -> None:
        self.store = store
        self.tokenize = tokenizer
        self.k1, self.b, self.epsilon = float(k1), float(b), float(epsilon)
        self.vocab: dict[str, int] = {}
        self._indptr: list[int] = [0]
        self._indices: list[np.ndarray] = []
        self._counts: list[np.ndarray] = []
        self._indices_all = np.zeros(0, dtype=np.int64)
        self._counts_all = np.zeros(0, dtype=np.float64)
        self._stats: dict[UserKey, _UserStats] = {}

    @property
    def n_rows(self) -> int:
        return len(self._indptr) - 1

    def sync(self) -> None:
        """Tokenize the stored rows that are not in the matrix yet."""
        if self.n_rows == len(self.store):
            return
        vocab = self.vocab
        for doc in self.store.items[self.n_rows:]:
            counts: dict[int, int] = {}
            for token in self.tokenize(doc.full_text):
                column = vocab.setdefault(token, len(vocab))
                counts[column] = counts.get(column, 0) + 1
            # dict order = first occurrence in the document, which rank_bm25's idf sum follows
            self._indices.append(np.fromiter(counts.keys(), dtype=np.int64, count=len(counts)))
            self._counts.append(np.fromiter(counts.values(), dtype=np.float64, count=len(counts)))
            self._indptr.append(self._indptr[-1] + len(counts))
        self._indices_all = np.concatenate([self._indices_all, *self._indices])
        self._counts_all = np.concatenate([self._counts_all, *self._counts])
        self._indices, self._counts = [], []

    def _user_stats(self, user: User) -> _UserStats:
        key = user_key(user)
        stats = self._stats.get(key)
        if stats is not None:
            return stats
        rows = self.store.rows(user)
        self.sync()
        sparse = require("scipy.sparse", "base", purpose="BM25 over user histories")
        lo, hi = self._indptr[rows.start], self._indptr[rows.stop]
        indptr = np.asarray(self._indptr[rows.start: rows.stop + 1], dtype=np.int64) - lo
        indices, tf = self._indices_all[lo:hi], self._counts_all[lo:hi]
        n_docs = rows.stop - rows.start
        # local term ids in order of first occurrence: rank_bm25 sums idf in that order
        terms, first, inverse = np.unique(indices, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")
        local_of_sorted = np.empty_like(order)
        local_of_sorted[order] = np.arange(len(order))
        local = local_of_sorted[inverse]
        df = np.bincount(local, minlength=len(terms))
        idf_list = [math.log(n_docs - f + 0.5) - math.log(f + 0.5) for f in df.tolist()]
        idf = np.asarray(idf_list, dtype=np.float64)
        if len(idf_list):
            idf_sum = 0.0
            for value in idf_list:  # sequential, as rank_bm25 does, so the floor matches exactly
                idf_sum += value
            idf[idf < 0] = self.epsilon * (idf_sum / len(idf_list))
        row_of = np.repeat(np.arange(n_docs), np.diff(indptr))
        doc_len = np.bincount(row_of, weights=tf, minlength=n_docs)
        avgdl = float(doc_len.sum()) / n_docs if n_docs else 0.0
        norm = 1 - self.b + self.b * doc_len / avgdl if avgdl > 0 else np.ones(n_docs)
        tf_part = tf * (self.k1 + 1) / (tf + self.k1 * norm[row_of])
        postings = sparse.csc_matrix((tf_part, (row_of, local)), shape=(n_docs, len(terms)))
        columns = dict(zip(terms[order].tolist(), range(len(terms))))
        stats = _UserStats(columns, idf, postings)
        self._stats[key] = stats
        return stats

    def scores(self, user: User, query_text: str) -> np.ndarray:
        """BM25 score of each of the user's history items (in history order) for the query."""
        stats = self._user_stats(user)
        n_docs = len(user.history)
        out = np.zeros(n_docs, dtype=np.float64)
        post = stats.postings
        for token in self.tokenize(query_text):  # repeated query tokens count again, as in rank_bm25
            column = self.vocab.get(token)
            local = None if column is None else stats.columns.get(column)
            if local is None:
                continue
            start, stop = post.indptr[local], post.indptr[local + 1]
            out[post.indices[start:stop]] += stats.idf[local] * post.data[start:stop]
        return out


class ItemEmbeddings:
    """Unit-normalised embeddings of stored rows, each row encoded once."""

    def __init__(self, store: ProfileStore, encode: Callable[[Sequence[str]], np.ndarray]) -> None:
        self.store = store
        self.encode = encode
        self._blocks: list[np.ndarray] = []
        self._matrix: np.ndarray | None = None
        self._n = 0

    def sync(self) -> None:
        if self._n == len(self.store):
            return
        texts = [d.full_text for d in self.store.items[self._n:]]
        self._blocks.append(normalize(np.asarray(self.encode(texts), dtype=np.float32)))
        self._n = len(self.store)
        self._matrix = None

    @property
    def matrix(self) -> np.ndarray:
        self.sync()
        if self._matrix is None:
            self._matrix = np.concatenate(self._blocks) if self._blocks else np.zeros((0, 0), np.float32)
            self._blocks = [self._matrix]
        return self._matrix

    def of(self, user: User) -> np.ndarray:
        return self.matrix[self.store.rows(user)]


def normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def sort_dates(history: Sequence[Document]) -> list[int]:
    """Indices of `history`, newest `date` (meta) first; undated items last, in history order."""
    dated = [(str(d.meta.get("date")), i) for i, d in enumerate(history) if d.meta.get("date") not in (None, "")]
    dated.sort(key=lambda pair: pair[1])
    dated.sort(key=lambda pair: pair[0], reverse=True)  # stable: equal dates keep history order
    seen = {i for _, i in dated}
    return [i for _, i in dated] + [i for i in range(len(history)) if i not in seen]
