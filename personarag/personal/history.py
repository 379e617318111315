"""Retrieval from the query user's own history (the LaMP setting), plus recency and random baselines.

Candidates come from `query.user.history`, so these retrievers need no corpus
(`needs_corpus = False`: the Pipeline skips `index`). Nothing is rebuilt per example: each
user's history is indexed once, on first use, and the index is extended as new users
arrive; a user id that comes with a changed history (an item added, removed or edited)
gets that history indexed in place of the old one, other users untouched. Each query is
scored against its own user's rows only. Item texts are tokenized once per content
(`personal.tokens.TokenCache`, which can be shared between retrievers).

- `history:bm25` computes BM25 statistics (idf, avgdl) over the user's own history, as the
  LaMP / CFRAG reference code does by building `rank_bm25.BM25Okapi(profile)` per query; with
  the defaults (`tokenizer="split"`, k1=1.5, b=0.75, epsilon=0.25) its scores equal that
  code's bit for bit and ties are ordered as its `get_top_n` orders them
  (`np.argsort(scores)[::-1]`), so the top-k is the same.
- `history:dense:MODEL` encodes every history item once and ranks the user's items by inner
  product with the query embedding (cosine: embeddings are normalised).
- `history:rrf:A+B` / `history:wsum:A+B` fuse the two over the user's items (A, B among
  `bm25` and `dense:MODEL`; wsum min-max normalises each score list first with
  `retrievers.fusion.minmax`, all equal -> 1).

A query whose user has an empty history gets an empty ranking (the collaborative retriever
falls back to similar users); a query without a user is an input error.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from personarag.errors import InputError
from personarag.retrievers.base import Retriever
from personarag.retrievers.fusion import minmax
from personarag.personal.profiles import (
    ItemEmbeddings, ProfileBM25, ProfileStore, make_tokenizer, sort_dates, tokenizer_name,
)
from personarag.personal.tokens import TokenCache
from personarag.types import Corpus, Query, Ranking, ScoredDoc, StageTrace

logger = logging.getLogger(__name__)


class _UserHistoryRetriever(Retriever):
    needs_corpus: ClassVar[bool] = False

    def _index(self, corpus: Corpus) -> None:
        raise InputError(
            f"{self.spec_name} retrieves from each query's user history and takes no corpus; "
            "run it without pipeline.index(corpus)"
        )

    def _retrieve(self, queries: list[Query], k: int) -> list[Ranking]:
        for query in queries:
            if query.user is None:
                raise InputError(f"query {query.id!r} has no user; {self.spec_name} ranks the user's history")
        self._prepare(queries)
        out = []
        for query, (order, scores) in zip(queries, self._rank_batch(queries)):
            history = query.user.history  # type: ignore[union-attr]
            top = order[:k]
            docs = [ScoredDoc(history[i], float(scores[i])) for i in top.tolist()]
            trace = StageTrace(self.spec_name, info={"user": query.user.id, "candidates": len(history)})  # type: ignore[union-attr]
            out.append(Ranking(query, docs, (trace,)))
        return out

    def _prepare(self, queries: list[Query]) -> None:
        """Index what the batch needs, once for the whole batch."""

    def _rank_batch(self, queries: list[Query]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query: (positions in the history, best first; a score per history item)."""
        empty = (np.zeros(0, dtype=np.int64), np.zeros(0))
        return [self._rank(q) if q.user.history else empty for q in queries]  # type: ignore[union-attr]

    def _rank(self, query: Query) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


def _rank_scores(n: int) -> np.ndarray:
    return 1.0 / (1.0 + np.arange(n, dtype=np.float64))


class RecencyRetriever(_UserHistoryRetriever):
    """The user's newest items first, by `meta["date"]` (parsed by `personal.dates.parse_date`:
    YYYY, YYYY-MM, YYYY-MM-DD with or without zero padding, optionally with a time); undated
    items last, in history order; equal dates keep history order; an unreadable date is an
    InputError naming the query, user and item. Score: 1 / (1 + rank)."""

    spec_name = "recency"

    def _rank(self, query: Query) -> tuple[np.ndarray, np.ndarray]:
        user = query.user
        where = f"query {query.id!r}, user {user.id!r}"  # type: ignore[union-attr]
        order = np.asarray(sort_dates(user.history, where), dtype=np.int64)  # type: ignore[union-attr]
        scores = np.empty(len(order))
        scores[order] = _rank_scores(len(order))
        return order, scores


class RandomRetriever(_UserHistoryRetriever):
    """The user's items in a random order, seeded per query (seed and query id), so a query
    gets the same order whatever batch it comes in. Score: 1 / (1 + rank)."""

    spec_name = "random"

    def __init__(self, seed: int = 0) -> None:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise InputError(f"seed must be an integer, got {seed!r}")
        self.seed = seed

    def _rank(self, query: Query) -> tuple[np.ndarray, np.ndarray]:
        n = len(query.user.history)  # type: ignore[union-attr]
        rng = np.random.default_rng([self.seed, zlib.crc32(query.id.encode())])
        order = rng.permutation(n)
        scores = np.empty(n)
        scores[order] = _rank_scores(n)
        return order, scores


class HistoryRetriever(_UserHistoryRetriever):
    """A retriever restricted to the query user's own history; see the module docstring.

    `retriever`: "bm25", "dense:MODEL", "rrf:A+B" or "wsum:A+B". BM25 options: `k1`, `b`,
    `epsilon` (rank_bm25's idf floor), `tokenizer` ("split" = `str.split`, the reference;
    "words" = lowercased word tokens), `stemmer` (PyStemmer language or None). Dense options:
    `batch_size`, `device`, `encoder` (an object with the `SentenceEncoder.encode` signature,
    used instead of loading MODEL; for tests). Fusion: `rrf_k`, `weights` (one per part).
    `tokens`: a `TokenCache` for the same tokenizer (`tokenizer_name(tokenizer, stemmer)`),
    shared with other retrievers; texts it holds are not tokenized again. It is state, not
    configuration, so `config()` leaves it out.
    `store` (a `UserStore`, path or URL; or later `bind_store` / `Pipeline.fit(store=...)`):
    BM25 keeps its derived data there (`personal.stored_tokens`): the vocabulary and each
    text's bag of words under the tokenizer's fingerprint, and each stored user's postings,
    read in bulk by a fresh retriever and re-used while the user's history is unchanged. The
    ranked history is still the query's (`query.user.history`); stored data is used only for
    content equal to it. Opened on first use.
    """

    spec_name = "history"

    def __init__(
        self,
        retriever: str = "bm25",
        *,
        k1: float = 1.5,
        b: float = 0.75,
        epsilon: float = 0.25,
        tokenizer: str = "split",
        stemmer: str | None = None,
        batch_size: int = 64,
        device: str | None = None,
        rrf_k: int = 60,
        weights: Sequence[float] | None = None,
        encoder: Any = None,
        tokens: TokenCache | None = None,
        store: Any = None,
    ) -> None:
        self.parts, self.fusion = parse_history_spec(retriever)
        if store is not None and tokens is not None:
            raise InputError("give the history retriever either tokens= (a token cache) or store= "
                             "(a user store that keeps the tokens), not both")
        if weights is not None and len(weights) != len(self.parts):
            raise InputError(f"weights: one per fused retriever ({len(self.parts)}), got {list(weights)!r}")
        self.weights = [1.0] * len(self.parts) if weights is None else [float(w) for w in weights]
        self.rrf_k = rrf_k
        self.batch_size = batch_size
        self.device = device
        name = tokenizer_name(tokenizer, stemmer)
        if tokens is not None and tokens.name != name:
            raise InputError(f"the token cache holds {tokens.name!r} tokens; this retriever tokenizes with {name!r}")
        self._tokenize = make_tokenizer(tokenizer, stemmer) if tokens is None else tokens.tokenize
        tokens = TokenCache(self._tokenize, name) if tokens is None else tokens
        self._token_name = name
        self.store = ProfileStore(replace=True)  # one history per user id: a changed one replaces it
        self.bm25 = ProfileBM25(self.store, self._tokenize, k1=k1, b=b, epsilon=epsilon, tokens=tokens)
        self.user_store: Any = None  # a UserStore keeping the BM25 data, once opened
        self._pending_store = store
        models = {p.partition(":")[2] for p in self.parts if p.startswith("dense:")}
        if len(models) > 1:
            raise InputError(f"history fusion over one dense model at most, got {sorted(models)}")
        self.model = next(iter(models), None)
        self._encoder = encoder
        self.embeddings: ItemEmbeddings | None = None
        self._query_vectors = np.zeros((0, 0), dtype=np.float32)  # the current batch's, in order

    @property
    def encoder(self) -> Any:
        if self._encoder is None:
            from personarag.retrievers.encoders import load_sentence_encoder

            self._encoder = load_sentence_encoder(self.model, self.device)  # type: ignore[arg-type]
        return self._encoder

    def config(self) -> dict[str, Any]:
        params = self._construction_params  # type: ignore[has-type]
        self._construction_params = {k: v for k, v in params.items() if k != "tokens"}  # a cache, not a setting
        try:
            return super().config()
        finally:
            self._construction_params = params

    @property
    def bound_to_store(self) -> bool:
        """True when BM25 keeps its tokens and postings in a user store (store= or bound)."""
        return self.user_store is not None or self._pending_store is not None

    def fit(self, *, users: Any = None, store: Any = None) -> HistoryRetriever:
        """The pipeline's fitting hook (`Pipeline.fit`): with `store`, keep BM25's data there
        (`bind_store`); `users` are not needed (each query brings its user's history), so a
        pool of users given for other stages is not indexed here."""
        if (users is None) == (store is None):
            raise InputError("fit takes exactly one of users= (User objects) or store= (a UserStore, path or URL)")
        return self.bind_store(store) if store is not None else self

    def bind_store(self, store: Any) -> HistoryRetriever:
        """Keep BM25's derived data in `store` (a `UserStore`, path or URL) from now on; what
        this retriever indexed before is dropped (its term ids are not the store's)."""
        from personarag.personal.store import UserStore
        from personarag.personal.stored_tokens import StoredTokens

        opened = store if isinstance(store, UserStore) else UserStore(store)
        params = self.bm25.k1, self.bm25.b, self.bm25.epsilon
        stored = StoredTokens(opened, TokenCache(self._tokenize, self._token_name))
        self.store = ProfileStore(replace=True)
        self.bm25 = ProfileBM25(self.store, self._tokenize, k1=params[0], b=params[1], epsilon=params[2], stored=stored)
        self.embeddings = None
        self.user_store, self._pending_store = opened, None
        return self

    def _open_store(self) -> None:
        if self._pending_store is not None:
            self.bind_store(self._pending_store)

    def _encode(self, task: str) -> Callable[[Sequence[str]], np.ndarray]:
        def run(texts: Sequence[str]) -> np.ndarray:
            return self.encoder.encode(list(texts), batch_size=self.batch_size, task=task)

        return run

    def _prepare(self, queries: list[Query]) -> None:
        # BM25 stores and indexes the batch's histories when it scores them (one pass)
        if "bm25" in self.parts:
            self._open_store()
        if self.model is not None:
            self.store.add(q.user for q in queries if q.user is not None)
            if self.embeddings is None:
                self.embeddings = ItemEmbeddings(self.store, self._encode("document"))
            self.embeddings.sync()
            self._query_vectors = self._encode("query")([q.text for q in queries])

    def _part_scores(self, part: str, queries: list[Query]) -> list[np.ndarray]:
        if part == "bm25":
            return self.bm25.scores_many([q.user for q in queries], [q.text for q in queries])  # type: ignore[misc]
        assert self.embeddings is not None  # set by _prepare
        return [
            (self.embeddings.of(q.user) @ vector).astype(np.float64)  # type: ignore[arg-type]
            for q, vector in zip(queries, self._query_vectors)
        ]

    def _rank_batch(self, queries: list[Query]) -> list[tuple[np.ndarray, np.ndarray]]:
        if self.fusion is None:
            part = self.parts[0]
            out = []
            for scores in self._part_scores(part, queries):
                # bm25: rank_bm25's get_top_n order, ties included, so the top-k matches the reference
                order = np.argsort(scores)[::-1] if part == "bm25" else np.argsort(-scores, kind="stable")
                out.append((order, scores))
            return out
        fused = [np.zeros(len(q.user.history)) for q in queries]  # type: ignore[union-attr]
        for part, weight in zip(self.parts, self.weights):
            for total, scores in zip(fused, self._part_scores(part, queries)):
                if not len(scores):
                    continue
                if self.fusion == "rrf":
                    ranks = np.empty(len(scores))
                    ranks[np.argsort(-scores, kind="stable")] = np.arange(1, len(scores) + 1)
                    total += weight / (self.rrf_k + ranks)
                else:
                    total += weight * np.asarray(minmax(scores))
        return [(np.argsort(-total, kind="stable"), total) for total in fused]


def parse_history_spec(spec: str) -> tuple[list[str], str | None]:
    """"bm25" | "dense:MODEL" | "rrf:A+B" | "wsum:A+B" -> (parts, fusion or None)."""
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"history retriever must be 'bm25', 'dense:MODEL', 'rrf:A+B' or 'wsum:A+B', got {spec!r}")
    name, _, rest = spec.strip().partition(":")
    fusion = None
    parts = [spec.strip()]
    if name in ("rrf", "wsum"):
        fusion = name
        parts = [p.strip() for p in rest.split("+")]
        if len(parts) < 2:
            raise InputError(f"history fusion {spec!r} needs at least two retrievers joined by '+'")
    for part in parts:
        if not (part == "bm25" or (part.startswith("dense:") and len(part) > len("dense:"))):
            raise InputError(
                f"history retriever part {part!r} (in {spec!r}) is not supported; "
                "use 'bm25' or 'dense:MODEL' (optionally fused: 'rrf:bm25+dense:MODEL')"
            )
    return parts, fusion
