"""The in-process BM25 backends: bm25s (fast, sparse, numpy) and rank_bm25 (the reference).

Both tokenize with the same bm25s `Tokenizer`, so they score the same tokens. A backend
returns, per query, candidate positions and scores; `BM25Retriever` orders them and fills
up to `k` with non-matching documents.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from personarag.errors import InputError, require
from personarag.retrievers import tokenization
from personarag.retrievers.tokenization import Stopwords

logger = logging.getLogger(__name__)

#: bm25s's scoring variants (Kamphuis et al., ECIR 2020).
BM25S_METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")
#: `doc_lengths`: "exact" token counts, or "lucene": rounded as Lucene stores them (see `lucene_doc_lengths`).
DOC_LENGTHS = ("exact", "lucene")
#: the variants whose term weight is f(tf) / (tf + K(length)), so that `doc_lengths="lucene"` can rescale it.
_RESCALABLE = ("lucene", "robertson", "atire")


@dataclass(frozen=True)
class Hits:
    """One query's candidates: positions into the corpus and their scores, in no particular order."""

    positions: np.ndarray
    scores: np.ndarray
    query_terms: int | None = None  # tokens of the query found in the index (None: the backend does not say)
    ordered: bool = False  # already by score, ties by position: the retriever need not sort again


@dataclass
class TokenOptions:
    lowercase: bool = True
    stopwords: Stopwords = "en"
    stemmer: str | None = "english"
    splitter: str = "bm25s"

    def tokenizer(self) -> Any:
        return tokenization.make_tokenizer(
            lowercase=self.lowercase, stopwords=self.stopwords, stemmer=self.stemmer, splitter=self.splitter
        )


class Bm25sBackend:
    """bm25s: token ids from its Tokenizer, an eager sparse score matrix, numpy top-k."""

    name: ClassVar[str] = "bm25s"

    def __init__(
        self,
        *,
        k1: float,
        b: float,
        method: str,
        idf_method: str | None,
        tokens: TokenOptions,
        n_threads: int,
        show_progress: bool,
        doc_lengths: str = "exact",
    ) -> None:
        require("bm25s", "bm25", purpose="the bm25s backend")
        if doc_lengths not in DOC_LENGTHS:
            raise InputError(f"doc_lengths must be one of {', '.join(map(repr, DOC_LENGTHS))}, got {doc_lengths!r}")
        if doc_lengths == "lucene" and method not in _RESCALABLE:
            raise InputError(f"doc_lengths='lucene' needs method in {', '.join(_RESCALABLE)}, got method={method!r}")
        self.k1, self.b, self.method, self.idf_method = k1, b, method, idf_method
        self.doc_lengths = doc_lengths
        self.tokens = tokens
        self.n_threads = n_threads
        self.show_progress = show_progress
        self.tokenizer: Any = None
        self.model: Any = None

    @property
    def num_docs(self) -> int:
        return int(self.model.scores["num_docs"])

    def build(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        import bm25s

        self.tokenizer = self.tokens.tokenizer()
        token_ids = tokenization.tokenize_corpus(self.tokenizer, texts, show_progress=self.show_progress)
        model = bm25s.BM25(k1=self.k1, b=self.b, method=self.method, idf_method=self.idf_method, backend="numpy")
        # A copy: bm25s may add its empty token to the vocabulary it is given.
        model.index((token_ids, dict(self.tokenizer.get_vocab_dict())), show_progress=self.show_progress)
        if self.doc_lengths == "lucene":
            self._use_lucene_lengths(model.scores, token_ids)
        self.model = model

    def _use_lucene_lengths(self, scores: dict[str, Any], token_ids: list[list[int]]) -> None:
        """Rescale bm25s's weights idf * f(tf) / (tf + K(dl)) to K(Lucene's stored dl); avgdl stays exact, as in Lucene."""
        lengths = np.fromiter(map(len, token_ids), dtype=np.int64, count=len(token_ids))
        flat = np.fromiter((t for doc in token_ids for t in doc), dtype=np.int64, count=int(lengths.sum()))
        # (token, document) pairs in the order of bm25s's CSC matrix: by token, then by document
        pairs, tf = np.unique(flat * len(lengths) + np.repeat(np.arange(len(lengths)), lengths), return_counts=True)
        docs = pairs % len(lengths)
        if not np.array_equal(docs, scores["indices"]):
            raise RuntimeError("bm25s's score matrix is not laid out as expected (by token, then document); "
                               "doc_lengths='lucene' cannot apply. Please report this with your bm25s version")  # fmt: skip
        average = lengths.mean()

        def k(dl: np.ndarray) -> np.ndarray:
            return self.k1 * (1 - self.b + self.b * dl / average)

        ratio = (tf + k(lengths[docs])) / (tf + k(lucene_doc_lengths(lengths)[docs]))
        scores["data"] = (scores["data"] * ratio).astype(scores["data"].dtype)

    def search(self, texts: Sequence[str], k: int) -> list[Hits]:
        query_ids = tokenization.tokenize_queries(self.tokenizer, texts)
        hits = [Hits(np.empty(0, np.int64), np.empty(0, np.float32), 0) for _ in query_ids]
        # bm25s maps a query with no known token to its empty token; such queries match nothing.
        answerable = [i for i, ids in enumerate(query_ids) if ids]
        if not answerable:
            return hits
        results = self.model.retrieve(
            [query_ids[i] for i in answerable],
            k=min(k, self.num_docs),
            sorted=True,
            return_as="tuple",
            n_threads=self.n_threads,
            show_progress=self.show_progress,
        )
        positions, scores = np.asarray(results.documents, dtype=np.int64), np.asarray(results.scores)
        # bm25s leaves equal scores in any order: re-sort the rows that have ties, ties by corpus position
        tied = np.flatnonzero(((scores[:, 1:] == scores[:, :-1]) & (scores[:, 1:] > 0)).any(axis=-1))
        if len(tied):
            positions[tied], scores[tied] = sort_by_score_then_position(positions[tied], scores[tied])
        matched = np.count_nonzero(scores > 0, axis=-1).tolist()
        for row, i in enumerate(answerable):
            # the zero-score tail bm25s picks is arbitrary: cut it, the retriever refills it in corpus order
            end = matched[row]
            hits[i] = Hits(positions[row, :end], scores[row, :end], len(query_ids[i]), ordered=True)
        return hits

    def save(self, directory: Path) -> None:
        self.model.save(directory, show_progress=False)
        tokenization.save_tokenizer(self.tokenizer, directory)

    def load(self, directory: Path, *, mmap: bool) -> None:
        import bm25s

        self.model = bm25s.BM25.load(directory, mmap=mmap, load_corpus=False, show_progress=False)
        self.tokenizer = tokenization.load_tokenizer(directory, self.tokens.tokenizer())

    def info(self) -> dict[str, Any]:
        return {"vocabulary": len(self.model.vocab_dict), "method": self.method, "idf_method": self.idf_method}


def sort_by_score_then_position(positions: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row by score descending, ties by position ascending: one sort of 64-bit keys (the
    float32 score's bits made order-preserving, inverted, above the position), 5x faster than lexsort."""
    bits = np.ascontiguousarray(scores, dtype=np.float32).view(np.uint32)
    ascending = bits ^ np.where(bits >> 31, np.uint32(0xFFFFFFFF), np.uint32(0x80000000))  # float order as unsigned
    keys = ((~ascending).astype(np.uint64) << np.uint64(32)) | positions.astype(np.uint64)
    keys.sort(axis=-1)
    descending = (keys >> np.uint64(32)).astype(np.uint32)
    bits = ~descending ^ np.where(~descending >> 31, np.uint32(0x80000000), np.uint32(0xFFFFFFFF))
    return (keys & np.uint64(0xFFFFFFFF)).astype(np.int64), bits.view(np.float32).astype(scores.dtype)


def lucene_doc_lengths(lengths: np.ndarray) -> np.ndarray:
    """Document lengths as Lucene's BM25 sees them: stored in one byte (SmallFloat.intToByte4),
    exact below 24, above that 24 + (length - 24) cut to its 4 leading bits."""
    free = 24
    above = np.maximum(np.asarray(lengths, dtype=np.int64) - free, 0)
    bits = np.frexp(above.astype(np.float64))[1]  # the bit length of each value (0 for 0)
    shift = np.maximum(bits - 4, 0)
    return np.where(lengths < free, lengths, free + ((above >> shift) << shift))


class RankBm25Backend:
    """rank_bm25's BM25Okapi over the same tokens: idf log((N-n+0.5)/(n+0.5)) floored at
    epsilon * mean idf, term frequency tf*(k1+1)/(tf + k1*(1-b+b*dl/avgdl)). Scores every document."""

    name: ClassVar[str] = "rank_bm25"

    def __init__(self, *, k1: float, b: float, tokens: TokenOptions, show_progress: bool) -> None:
        require("bm25s", "bm25", purpose="the tokenizer of the rank_bm25 backend")
        require("rank_bm25", "bm25", purpose="the rank_bm25 backend")
        self.k1, self.b = k1, b
        self.tokens = tokens
        self.show_progress = show_progress
        self.tokenizer: Any = None
        self.model: Any = None
        self._token_ids: list[list[int]] = []

    @property
    def num_docs(self) -> int:
        return int(self.model.corpus_size)

    def build(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        self.tokenizer = self.tokens.tokenizer()
        self._fit(tokenization.tokenize_corpus(self.tokenizer, texts, show_progress=self.show_progress))

    def _fit(self, token_ids: list[list[int]]) -> None:
        from rank_bm25 import BM25Okapi

        self._token_ids = token_ids
        self.model = BM25Okapi(tokenization.decode(self.tokenizer, token_ids), k1=self.k1, b=self.b)

    def search(self, texts: Sequence[str], k: int) -> list[Hits]:
        query_ids = tokenization.tokenize_queries(self.tokenizer, texts)
        positions = np.arange(self.num_docs, dtype=np.int64)
        out = []
        for terms in tokenization.decode(self.tokenizer, query_ids):
            scores = self.model.get_scores(terms) if terms else np.zeros(self.num_docs)
            out.append(Hits(positions, np.asarray(scores, dtype=np.float64), len(terms)))
        return out

    def save(self, directory: Path) -> None:
        # rank_bm25 has no index format: keep its token ids and rebuild on load.
        lengths = np.asarray([len(doc) for doc in self._token_ids], dtype=np.int64)
        flat = np.fromiter((t for doc in self._token_ids for t in doc), dtype=np.int64, count=int(lengths.sum()))
        np.save(directory / "token_ids.npy", flat)
        np.save(directory / "token_offsets.npy", np.concatenate([[0], np.cumsum(lengths)]))
        tokenization.save_tokenizer(self.tokenizer, directory)

    def load(self, directory: Path, *, mmap: bool) -> None:
        self.tokenizer = tokenization.load_tokenizer(directory, self.tokens.tokenizer())
        flat = np.load(directory / "token_ids.npy")
        offsets = np.load(directory / "token_offsets.npy")
        self._fit([flat[offsets[i] : offsets[i + 1]].tolist() for i in range(len(offsets) - 1)])

    def info(self) -> dict[str, Any]:
        return {"vocabulary": len(self.model.idf)}
