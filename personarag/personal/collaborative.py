"""Collaborative retrieval (CFRAG-style): documents from the histories of similar users too.

For a query of user u:
1. u's embedding: the (recency-weighted) mean of u's item embeddings, or a trained user
   encoder (`user_encoder=PATH`, see `personarag.training.user_encoder`);
2. the `m` most similar users by cosine, through a FAISS index over the embeddings of the
   users the retriever was fitted on: `fit_users(users)` (in memory), or a user store
   (`store=PATH_OR_URL`, `bind_store`), whose changes are picked up before each batch
   (`changes_since`), with item embeddings cached in the store and user vectors kept fresh
   (`personal.item_embeddings`). Retrieving before either raises: results never depend on how
   queries are batched. u itself is never among them, no user outside that set ever
   contributes a document, and items with `meta["shared"] = False` reach only their owner:
   they are not candidates for others, and the vector others' search compares a user against
   is built from that user's shared items only (u's own search vector uses all of u's items);
3. candidates: u's own history (`include_own`) and the histories of those m users; a document
   id seen twice is kept once (u's own copy first, else the most similar user's);
4. each candidate gets the features
   `relevance` (dense: cosine of query and item embeddings; bm25: BM25 with statistics over
   the candidates, Lucene idf, min-max scaled over the candidates), `preference` (cosine of the item
   embedding with u's embedding), `user_similarity` (1 for u's own items) and `own` (1 or 0),
   and the score `weights · features`; by default `(1 - alpha) * relevance + alpha * preference`.
   `scorer=PATH` loads weights learned from LLM feedback (`personarag.training.llm_feedback`).

Speed: neighbours are found from u's stored vector, never from the query. With
`relevance="dense"` (default) each query is still encoded (MiniLM at 1 thread: 20-60 ms per
LaMP query, most of a warm query's time; `query_cache=N` keeps the vectors of the N most recent
query texts); `relevance="bm25"` encodes no query at all (a warm LaMP dev query takes a few ms,
see benchmarks/results/collab_latency.md for the speed and the quality each gives).

A user with an empty history has no embedding: with `empty_history="query"` (default) the
query's embedding stands in for it (similar users are those whose profiles resemble the
query, and preference equals relevance to the query); with `"none"` such queries get an
empty ranking.
"""

from __future__ import annotations

import logging
import os
import operator
from collections.abc import Iterable, Sequence
from itertools import chain
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from personarag.errors import InputError
from personarag.retrievers.base import Retriever
from personarag.personal.item_embeddings import (
    BACKENDS, ItemEmbeddings, ItemEncoder, MemoryEmbeddingCache, UserVectors, aggregate, load_item_encoder, shared, shared_part,
    weights_digest,
)
from personarag.personal.collaborative_scorer import FEATURES, load_scorer, save_scorer
from personarag.personal.query_cache import QueryVectorCache
from personarag.personal.profiles import ProfileBM25, ProfileStore, make_tokenizer, normalize
from personarag.personal.store import ChangesCompacted, UserStore
from personarag.personal.user_embeddings import recency_weights
from personarag.types import Corpus, Document, Query, Ranking, ScoredDoc, StageTrace, User

logger = logging.getLogger(__name__)

_ID = operator.attrgetter("id")

__all__ = ["FEATURES", "Candidates", "CollaborativeRetriever", "load_scorer", "save_scorer", "shared"]

RELEVANCE = ("dense", "bm25")
EMPTY_HISTORY = ("query", "none")


@dataclass(frozen=True)
class Candidates:
    """One query's candidate documents, their owners and features (rows follow `FEATURES`)."""

    query: Query
    docs: tuple[Document, ...]
    owners: tuple[str, ...]
    features: np.ndarray
    similar: tuple[tuple[str, float], ...]


class CollaborativeRetriever(Retriever):
    spec_name = "collaborative"
    needs_corpus: ClassVar[bool] = False

    def __init__(
        self,
        model: str = "sentence-transformers/all-MiniLM-L6-v2",
        *,
        m: int = 4,
        alpha: float = 0.5,
        relevance: str = "dense",
        user_encoder: str | None = None,
        recency_decay: float = 0.0,
        recency_by: str = "rank",
        index: str = "flat",
        nprobe: int = 32,
        ef_search: int = 64,
        include_own: bool = True,
        empty_history: str = "query",
        scorer: str | None = None,
        batch_size: int = 64,
        device: str | None = None,
        backend: str = "torch",
        onnx_model: str | None = None,
        store: str | os.PathLike | UserStore | None = None,
        k1: float = 1.5,
        b: float = 0.75,
        epsilon: float = 0.25,
        tokenizer: str = "split",
        query_cache: int = 0,
        encoder: Any = None,
    ) -> None:
        if not isinstance(m, int) or isinstance(m, bool) or m < 0:
            raise InputError(f"m (similar users) must be an integer >= 0, got {m!r}")
        if relevance not in RELEVANCE:
            raise InputError(f"relevance must be one of {', '.join(RELEVANCE)}, got {relevance!r}")
        if empty_history not in EMPTY_HISTORY:
            raise InputError(f"empty_history must be one of {', '.join(EMPTY_HISTORY)}, got {empty_history!r}")
        if not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise InputError(f"alpha must be a number in [0, 1], got {alpha!r}")
        if backend not in BACKENDS:
            raise InputError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        recency_weights((), recency_decay, recency_by)  # validates both before any model loads
        self.model, self.m, self.alpha, self.relevance = model, m, float(alpha), relevance
        self.recency_decay, self.recency_by = recency_decay, recency_by
        self.include_own, self.empty_history = include_own, empty_history
        self.batch_size, self.device, self.backend, self.onnx_model = batch_size, device, backend, onnx_model
        self.index_options = {"kind": index, "nprobe": nprobe, "ef_search": ef_search}
        self._query_vectors = QueryVectorCache(query_cache)
        self.profiles = ProfileStore()  # BM25 statistics only
        self._encoder = encoder
        self._item_encoder: ItemEncoder | None = None
        self._memory = MemoryEmbeddingCache()  # embeddings of users given without a store
        self.bm25 = ProfileBM25(self.profiles, make_tokenizer(tokenizer), k1=k1, b=b, epsilon=epsilon) if relevance == "bm25" else None
        self.user_encoder = None
        self._user_encoder_id: str | None = None
        if user_encoder is not None:
            from personarag.personal.user_encoder import load_user_encoder

            self.user_encoder = load_user_encoder(user_encoder)
            self._user_encoder_id = weights_digest(user_encoder)
        self.weights = np.asarray([1 - self.alpha, self.alpha, 0.0, 0.0])
        if scorer is not None:
            self.weights = load_scorer(scorer)
        self._pool: dict[str, User] = {}
        self._items: dict[str, np.ndarray] = {}  # user id -> item embeddings, rows follow the history
        self._vectors: dict[str, np.ndarray] = {}  # user id -> unit user vector
        # user id -> unit vector of the shared items only, for users with some not shared: what
        # others' similar-user search compares against, so a private item never sways who is found
        self._public: dict[str, np.ndarray] = {}
        self._shared: dict[str, np.ndarray] = {}  # user id -> which history items others may see
        self._private: set[str] = set()  # users of the store marked not shared as a whole
        self._user_index: Any = None
        self._fitted = False
        self.user_store: UserStore | None = None
        self._seq = 0
        self._pending_store = store  # opened on first use, so building a pipeline loads no model

    @property
    def bound_to_store(self) -> bool:
        """True when users come from a user store (given as store= or bound), not from fit_users."""
        return self.user_store is not None or self._pending_store is not None

    @property
    def item_encoder(self) -> ItemEncoder:
        if self._item_encoder is None:
            self._item_encoder = load_item_encoder(
                self.model, backend=self.backend, device=self.device, onnx_model=self.onnx_model,
                batch_size=self.batch_size, encoder=self._encoder)
            self._encoder = self._item_encoder.encoder
        return self._item_encoder

    @property
    def encoder(self) -> Any:
        return self.item_encoder.encoder

    def _index(self, corpus: Corpus) -> None:
        raise InputError(
            "the collaborative retriever takes its candidates from user histories, not a corpus; "
            "give it the users with fit_users(users) or a user store (store=PATH) instead of index(corpus)"
        )

    # --- users ---------------------------------------------------------------------------
    def fit(self, *, users: Iterable[User] | None = None, store: Any = None) -> CollaborativeRetriever:
        """The pipeline's fitting hook (`Pipeline.fit`): bind to `store`, or fix the pool to `users`."""
        if (users is None) == (store is None):
            raise InputError("fit takes exactly one of users= (User objects) or store= (a UserStore, path or URL)")
        return self.bind_store(store) if store is not None else self.fit_users(users)  # type: ignore[arg-type]

    def fit_users(self, users: Iterable[User]) -> CollaborativeRetriever:
        """Fix the set of users whose histories may be retrieved (the data split's users), in memory."""
        pool: dict[str, User] = {}
        for user in users:
            if not isinstance(user, User):
                raise InputError(f"fit_users expects User objects, got {type(user).__name__}")
            if user.id in pool and pool[user.id].history != user.history:
                raise InputError(f"user id {user.id!r} appears twice with different histories")
            pool[user.id] = user
        self.user_store, self._pending_store, self._private = None, None, set()
        self._pool, self._items, self._vectors, self._shared, self._public, self._user_index = {}, {}, {}, {}, {}, None
        self._load(list(pool.values()), None)
        self._fitted = True
        return self

    def bind_store(self, store: Any) -> CollaborativeRetriever:
        """Take users, histories, item embeddings and user vectors from a `UserStore` (or its path/URL)."""
        self.user_store = store if isinstance(store, UserStore) else UserStore(store)
        self._pending_store = None
        self._pool, self._items, self._vectors, self._shared, self._public, self._user_index = {}, {}, {}, {}, {}, None
        self._seq = self.user_store.change_sequence()  # read before the users: later changes are re-read
        self._load_from_store(self.user_store.user_ids())
        self._fitted = True
        return self

    def sync(self) -> list[str]:
        """Re-read the users whose history changed in the store since the last sync; returns their ids."""
        if self.user_store is None:
            return []
        try:
            seq, changed = self.user_store.changes_since(self._seq)
        except ChangesCompacted as behind:  # the log no longer says what we missed: re-read everyone
            logger.info("collaborative: %s", behind)
            known = set(self._pool)
            self.bind_store(self.user_store)
            return sorted(known | set(self._pool))
        if changed:
            self._load_from_store(changed)
        self._seq = seq
        return changed

    def _user_vectors(self, shared_only: bool = False) -> UserVectors:
        return UserVectors(self.user_store, self._embeddings(), decay=self.recency_decay, by=self.recency_by,  # type: ignore[arg-type]
                           user_encoder=self.user_encoder, user_encoder_id=self._user_encoder_id, shared_only=shared_only)

    def _embeddings(self) -> ItemEmbeddings:
        return ItemEmbeddings(self.user_store if self.user_store is not None else self._memory, self.item_encoder)

    def _load_from_store(self, user_ids: Sequence[str]) -> None:
        store = self.user_store
        assert store is not None
        self._private = store.private_user_ids()
        present = [uid for uid in user_ids if store.has_user(uid)]
        versions = {uid: store.history_version(uid) for uid in present}  # before loading: see UserVectors.for_users
        for uid in set(user_ids) - set(present):
            self._forget(uid)
        self._load(list(store.users(present)) if present else [], versions, changed=list(user_ids))

    def _load(self, users: list[User], versions: dict[str, int] | None, changed: Sequence[str] | None = None) -> None:
        matrices = self._embeddings().embed_users(users)
        partly = [p for p, u in enumerate(users) if not all(shared(d) for d in u.history)]
        if versions is None:
            sums = aggregate(users, matrices, decay=self.recency_decay, by=self.recency_by, user_encoder=self.user_encoder)
            vectors = {uid: normalize(vec) for uid, (vec, count) in sums.items() if count}
            parts = [shared_part(users[p], matrices[p]) for p in partly]
            sums = aggregate([u for u, _ in parts], [m for _, m in parts], decay=self.recency_decay, by=self.recency_by,
                             user_encoder=self.user_encoder)
            public = {uid: normalize(vec) for uid, (vec, count) in sums.items() if count}
        else:
            vectors = self._user_vectors().for_users(users, versions, matrices)
            public = self._user_vectors(shared_only=True).for_users(
                [users[p] for p in partly], versions, [matrices[p] for p in partly])
        for user, matrix in zip(users, matrices):
            self._forget(user.id)
            self._pool[user.id], self._items[user.id] = user, matrix
            self._shared[user.id] = np.fromiter((shared(d) for d in user.history), dtype=bool, count=len(user.history))
            if user.id in vectors:
                self._vectors[user.id] = vectors[user.id]
            if user.id in public:
                self._public[user.id] = public[user.id]
        if self.bm25 is not None and users:  # index their tokens now, not during someone's query
            self.profiles.add(users)
            self.bm25.sync()
        if changed is not None and self._user_index is not None:
            self._update_index(changed)
        else:
            self._rebuild_index()

    def _forget(self, user_id: str) -> None:
        for table in (self._pool, self._items, self._vectors, self._shared, self._public):
            table.pop(user_id, None)

    def _searchable(self, user_id: str) -> bool:
        """In the index: users with a vector and something to share (only they are worth finding)."""
        return user_id in self._vectors and user_id not in self._private and bool(self._shared[user_id].any())

    def _public_vector(self, user_id: str) -> np.ndarray:
        """What other users' search compares against: the vector of the shared items only."""
        return self._public[user_id] if user_id in self._public else self._vectors[user_id]

    def _update_index(self, user_ids: Sequence[str]) -> None:
        """Bring the user index up to date for these users: an upsert/remove where the index
        supports it (personal.user_index with upsert), else a rebuild over the whole pool."""
        index = self._user_index
        if index is None or not hasattr(index, "upsert") or not len(index):
            return self._rebuild_index()
        index.remove([uid for uid in user_ids if not self._searchable(uid)], missing="ignore")
        upsert = [uid for uid in user_ids if self._searchable(uid)]
        if upsert:
            index.upsert(upsert, np.stack([self._public_vector(uid) for uid in upsert]))

    def _rebuild_index(self) -> None:
        from personarag.personal.user_index import UserIndex

        ids = [uid for uid in self._vectors if self._searchable(uid)]
        vectors = np.stack([self._public_vector(uid) for uid in ids]) if ids else np.zeros((0, 1), np.float32)
        self._user_index = UserIndex(**self.index_options).build(ids, vectors)
        logger.info("collaborative: %d users (%d searchable) in the user index", len(self._pool), len(ids))

    def _query_user(self, user: User) -> tuple[User, np.ndarray | None, np.ndarray | None]:
        """(user as known to the pool, item matrix, unit vector); a user unknown to the pool is embedded now."""
        if self.user_store is not None and user.id in self._pool:
            user = self._pool[user.id]  # the store is the truth about a stored user's history
        if self._pool.get(user.id) == user:
            return user, self._items[user.id], self._vectors.get(user.id)
        if not user.history:
            return user, None, None
        matrix = self._embeddings().embed_users([user])[0]
        vec, _ = aggregate([user], [matrix], decay=self.recency_decay, by=self.recency_by, user_encoder=self.user_encoder)[user.id]
        return user, matrix, normalize(vec)

    # --- candidates and scores -----------------------------------------------------------
    def candidates(self, queries: Sequence[Query]) -> list[Candidates]:
        """The candidate documents and features of each query (before scoring and cutting)."""
        for query in queries:
            if query.user is None:
                raise InputError(f"query {query.id!r} has no user; the collaborative retriever needs one")
        if self._pending_store is not None:
            self.bind_store(self._pending_store)
        if not self._fitted:
            raise InputError(
                "the collaborative retriever has no users: call fit_users(users), bind it to a user store "
                "(store=PATH, or bind_store), or fit the pipeline (Pipeline.fit(users=... or store=...)) "
                "before retrieving, so results do not depend on how queries are batched"
            )
        self.sync()
        resolved = [self._query_user(q.user) for q in queries]  # type: ignore[arg-type]
        # bm25 relevance needs no query vector: only a user without one falls back to the query's
        need = [i for i, (_, _, u_vec) in enumerate(resolved)
                if self.relevance == "dense" or (u_vec is None and self.empty_history == "query")]
        q_vecs = dict(zip(need, self._encode_queries([queries[i].text for i in need])))
        out = []
        for position, (query, (user, matrix, u_vec)) in enumerate(zip(queries, resolved)):
            q_vec = q_vecs.get(position)
            if u_vec is None:
                if self.empty_history != "query":
                    out.append(Candidates(query, (), (), np.zeros((0, len(FEATURES))), ()))
                    continue
                u_vec, matrix = q_vec, None
            similar = self._user_index.search(u_vec[None, :], self.m, exclude=[user.id])[0] if self._user_index else []
            out.append(self._features(query, user, matrix, q_vec, u_vec, similar))
        return out

    def _encode_queries(self, texts: list[str]) -> list[np.ndarray]:
        return self._query_vectors.vectors(texts, lambda batch: self.item_encoder.encode(batch, task="query"))

    def _features(self, query: Query, user: User, own_items: np.ndarray | None, q_vec: np.ndarray | None, u_vec: np.ndarray,
                  similar: list[tuple[str, float]]) -> Candidates:
        own = self.include_own and bool(user.history)
        owners = ([user] if own else []) + [self._pool[uid] for uid, _ in similar]
        matrices = ([own_items] if own else []) + [self._items[uid] for uid, _ in similar]
        sims = ([1.0] if own else []) + [s for _, s in similar]
        if not any(o.history for o in owners):
            return Candidates(query, (), (), np.zeros((0, len(FEATURES))), tuple(similar))
        # every owner's rows, then the ones kept: first copy of a document id (u's own first, then
        # the most similar user's), and another user's item only when it is shared
        docs_all = list(chain.from_iterable(o.history for o in owners))
        block = np.repeat(np.arange(len(owners)), [len(o.history) for o in owners])
        mine = (block == 0) if own else np.zeros(len(docs_all), dtype=bool)
        allowed = np.concatenate([np.ones(len(user.history), dtype=bool)] * own + [self._shared[uid] for uid, _ in similar])
        candidates = np.flatnonzero(allowed)
        ids = list(map(_ID, map(docs_all.__getitem__, candidates.tolist())))
        keep = candidates
        if len(set(ids)) < len(ids):
            first = dict(zip(reversed(ids), reversed(candidates.tolist())))  # id -> its first row
            keep = np.sort(np.fromiter(first.values(), dtype=np.int64, count=len(first)))
        rows = [m for m in matrices if len(m)]
        pref = np.concatenate([m @ u_vec for m in rows])[keep]
        if self.bm25 is not None:
            rel = unit_range(np.concatenate(self.bm25.pool_scores(owners, query.text))[keep])
        else:
            rel = np.concatenate([m @ q_vec for m in rows])[keep]
        features = np.column_stack([rel, pref, np.asarray(sims)[block[keep]], mine[keep]]).astype(np.float64)
        docs = tuple(map(docs_all.__getitem__, keep.tolist()))
        doc_owner = tuple(map([o.id for o in owners].__getitem__, block[keep].tolist()))
        return Candidates(query, docs, doc_owner, features, tuple(similar))

    def score(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(features, dtype=np.float64) @ self.weights

    def set_weights(self, weights: Sequence[float]) -> None:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (len(FEATURES),):
            raise InputError(f"one weight per feature {FEATURES}, got {weights.tolist()}")
        self.weights = weights

    def _retrieve(self, queries: list[Query], k: int) -> list[Ranking]:
        out = []
        for cands in self.candidates(queries):
            scores = self.score(cands.features)
            order = np.argsort(-scores, kind="stable")[:k]
            docs = [ScoredDoc(cands.docs[i], float(scores[i])) for i in order.tolist()]
            info = {
                "user": cands.query.user.id,  # type: ignore[union-attr]
                "similar_users": [list(pair) for pair in cands.similar],
                "owners": [cands.owners[i] for i in order.tolist()],
                "owner_of": {cands.docs[i].id: cands.owners[i] for i in order.tolist()},
                "candidates": len(cands.docs),
            }
            out.append(Ranking(cands.query, docs, (StageTrace(self.spec_name, info=info),)))
        return out


def unit_range(scores: np.ndarray) -> np.ndarray:
    """`retrievers.fusion.minmax` in numpy (same rules: all equal -> 1, non-finite -> 0)."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(scores)
    if not finite.any():
        return np.zeros(len(scores))
    low, high = scores[finite].min(), scores[finite].max()
    out = np.ones(len(scores)) if high == low else (scores - low) / (high - low)
    return np.where(finite, out, 0.0)
