"""Collaborative retrieval (CFRAG-style): documents from the histories of similar users too.

For a query of user u:
1. u's embedding: the (recency-weighted) mean of u's item embeddings, or a trained user
   encoder (`user_encoder=PATH`, see `personarag.training.user_encoder`);
2. the `m` most similar users by cosine, through a FAISS index over the embeddings of the
   users the retriever was fitted on (`fit_users(users)`; without it, each `retrieve` call
   fits on the distinct users of the queries passed). u itself is never among them, and no
   user outside that set ever contributes a document;
3. candidates: u's own history (`include_own`) and the histories of those m users; a document
   id seen twice is kept once (u's own copy first, else the most similar user's);
4. each candidate gets the features
   `relevance` (dense: cosine of query and item embeddings; bm25: BM25 with statistics over
   the candidates, Lucene idf, min-max scaled over the candidates), `preference` (cosine of the item
   embedding with u's embedding), `user_similarity` (1 for u's own items) and `own` (1 or 0),
   and the score `weights · features`; by default `(1 - alpha) * relevance + alpha * preference`.
   `scorer=PATH` loads weights learned from LLM feedback (`personarag.training.llm_feedback`).

A user with an empty history has no embedding: with `empty_history="query"` (default) the
query's embedding stands in for it (similar users are those whose profiles resemble the
query, and preference equals relevance to the query); with `"none"` such queries get an
empty ranking.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from personarag.errors import InputError
from personarag.retrievers.base import Retriever
from personarag.retrievers.fusion import minmax
from personarag.personal.profiles import ItemEmbeddings, ProfileBM25, ProfileStore, make_tokenizer, normalize
from personarag.types import Corpus, Document, Query, Ranking, ScoredDoc, StageTrace, User

logger = logging.getLogger(__name__)

FEATURES = ("relevance", "preference", "user_similarity", "own")
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
        k1: float = 1.5,
        b: float = 0.75,
        epsilon: float = 0.25,
        tokenizer: str = "split",
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
        self.model, self.m, self.alpha, self.relevance = model, m, float(alpha), relevance
        self.recency_decay, self.recency_by = recency_decay, recency_by
        self.include_own, self.empty_history = include_own, empty_history
        self.batch_size, self.device = batch_size, device
        self.index_options = {"kind": index, "nprobe": nprobe, "ef_search": ef_search}
        self.store = ProfileStore()
        self._encoder = encoder
        self.items = ItemEmbeddings(self.store, lambda texts: self.encoder.encode(list(texts), batch_size=batch_size, task="document"))
        self.bm25 = ProfileBM25(self.store, make_tokenizer(tokenizer), k1=k1, b=b, epsilon=epsilon) if relevance == "bm25" else None
        self.user_encoder = None
        if user_encoder is not None:
            from personarag.personal.user_encoder import load_user_encoder

            self.user_encoder = load_user_encoder(user_encoder)
        self.weights = np.asarray([1 - self.alpha, self.alpha, 0.0, 0.0])
        if scorer is not None:
            self.weights = load_scorer(scorer)
        self._fixed_pool = False
        self._pool: dict[str, User] = {}
        self._pool_key: frozenset | None = None
        self._user_index: Any = None
        self._user_vectors: dict[str, np.ndarray] = {}

    @property
    def encoder(self) -> Any:
        if self._encoder is None:
            from personarag.retrievers.encoders import load_sentence_encoder

            self._encoder = load_sentence_encoder(self.model, self.device)
        return self._encoder

    def _index(self, corpus: Corpus) -> None:
        raise InputError(
            "the collaborative retriever takes its candidates from user histories, not a corpus; "
            "give it the split's users with fit_users(users) instead of index(corpus)"
        )

    # --- users ---------------------------------------------------------------------------
    def fit_users(self, users: Iterable[User]) -> CollaborativeRetriever:
        """Fix the set of users whose histories may be retrieved (the data split's users)."""
        self._fit(list(users))
        self._fixed_pool = True
        return self

    def _fit(self, users: list[User]) -> None:
        pool: dict[str, User] = {}
        for user in users:
            if not isinstance(user, User):
                raise InputError(f"fit_users expects User objects, got {type(user).__name__}")
            if user.id in pool and pool[user.id].history != user.history:
                raise InputError(f"user id {user.id!r} appears twice with different histories")
            pool[user.id] = user
        from personarag.personal.user_index import UserIndex

        self._pool = pool
        self._pool_key = frozenset(pool)
        self.store.add(pool.values())
        with_history = [u for u in pool.values() if u.history]
        vectors = self._embed_users(with_history)
        self._user_vectors = dict(zip((u.id for u in with_history), vectors))
        self._user_index = UserIndex(**self.index_options).build([u.id for u in with_history], vectors)
        logger.info("collaborative: %d users (%d with a history) in the user index", len(pool), len(with_history))

    def _embed_users(self, users: Sequence[User]) -> np.ndarray:
        if not users:
            return np.zeros((0, 1), dtype=np.float32)
        self.store.add(users)
        matrix = self.items.matrix
        per_user = [matrix[self.store.rows(u)] for u in users]
        if self.user_encoder is not None:
            from personarag.personal.user_encoder import newest_first

            return self.user_encoder.embed([newest_first(e, u.history) for u, e in zip(users, per_user)])
        from personarag.personal.user_embeddings import profile_embedding

        return np.stack([profile_embedding(e, u.history, self.recency_decay, self.recency_by) for u, e in zip(users, per_user)])

    # --- candidates and scores -----------------------------------------------------------
    def candidates(self, queries: Sequence[Query]) -> list[Candidates]:
        """The candidate documents and features of each query (before scoring and cutting)."""
        for query in queries:
            if query.user is None:
                raise InputError(f"query {query.id!r} has no user; the collaborative retriever needs one")
        if not self._fixed_pool:
            users = list({q.user.id: q.user for q in queries}.values())  # type: ignore[union-attr]
            if frozenset(u.id for u in users) != self._pool_key:
                self._fit(users)
        self.store.add(q.user for q in queries)  # type: ignore[misc]
        query_vectors = normalize(np.asarray(self.encoder.encode([q.text for q in queries], batch_size=self.batch_size, task="query"), dtype=np.float32))
        out = []
        for query, q_vec in zip(queries, query_vectors):
            user = query.user
            assert user is not None
            if user.history:
                u_vec = self._user_vectors.get(user.id) if self._pool.get(user.id) == user else None
                u_vec = self._embed_users([user])[0] if u_vec is None else u_vec
            elif self.empty_history == "query":
                u_vec = q_vec
            else:
                out.append(Candidates(query, (), (), np.zeros((0, len(FEATURES))), ()))
                continue
            similar = self._user_index.search(u_vec[None, :], self.m, exclude=[user.id])[0] if self._user_index else []
            out.append(self._features(query, q_vec, u_vec, similar))
        return out

    def _features(self, query: Query, q_vec: np.ndarray, u_vec: np.ndarray, similar: list[tuple[str, float]]) -> Candidates:
        user = query.user
        assert user is not None
        owners = ([user] if self.include_own and user.history else []) + [self._pool[uid] for uid, _ in similar]
        sims = ([1.0] if self.include_own and user.history else []) + [s for _, s in similar]
        matrix = self.items.matrix
        docs, doc_owner, rows, sim_col, own_col, relevance = [], [], [], [], [], []
        seen: set[str] = set()
        bm25 = self.bm25.pool_scores(owners, query.text) if self.bm25 is not None else None
        for position, (owner, sim) in enumerate(zip(owners, sims)):
            block = self.store.rows(owner)
            for j, doc in enumerate(owner.history):
                if doc.id in seen:
                    continue
                seen.add(doc.id)
                docs.append(doc)
                doc_owner.append(owner.id)
                rows.append(block.start + j)
                sim_col.append(sim)
                own_col.append(1.0 if owner is user else 0.0)
                if bm25 is not None:
                    relevance.append(bm25[position][j])
        embeddings = matrix[np.asarray(rows, dtype=np.int64)] if rows else np.zeros((0, len(q_vec)), np.float32)
        if bm25 is None:
            rel = embeddings @ q_vec
        else:
            rel = np.asarray(minmax(relevance), dtype=np.float64)
        features = np.column_stack([rel, embeddings @ u_vec, sim_col, own_col]).astype(np.float64) if docs else np.zeros((0, len(FEATURES)))
        return Candidates(query, tuple(docs), tuple(doc_owner), features, tuple(similar))

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
                "candidates": len(cands.docs),
            }
            out.append(Ranking(cands.query, docs, (StageTrace(self.spec_name, info=info),)))
        return out


def save_scorer(path: str | Path, weights: Sequence[float], info: dict[str, Any] | None = None) -> Path:
    """Write learned feature weights as JSON (with whatever provenance `info` carries)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": "personarag-collaborative-scorer", "features": list(FEATURES),
               "weights": [float(w) for w in weights], **(info or {})}
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path


def load_scorer(path: str | Path) -> np.ndarray:
    path = Path(path)
    if path.is_dir():
        path = path / "scorer.json"
    if not path.is_file():
        raise InputError(f"no collaborative scorer at {path} (written by personarag.training.llm_feedback)")
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != "personarag-collaborative-scorer" or list(data.get("features", [])) != list(FEATURES):
        raise InputError(f"{path}: not a collaborative scorer over features {FEATURES}")
    return np.asarray(data["weights"], dtype=np.float64)
