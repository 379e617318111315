"""Nearest users by embedding, through the shared FAISS helper (exact by default; IVF or HNSW
for many users). Embeddings are unit-normalised, so scores are cosine similarities."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from personarag.errors import InputError
from personarag.retrievers.faiss_index import IndexSpec, VectorIndex
from personarag.personal.profiles import normalize


class UserIndex:
    """User ids and their embeddings in a `VectorIndex`; `search` leaves out the asking user.

    `kind`: "flat" (exact), "ivf" or "hnsw"; `options`: IndexSpec fields (nprobe, ef_search,
    nlist, hnsw_m, ...). The defaults (nprobe=32 of about 4*sqrt(n) lists; HNSW M=32,
    efConstruction=100, efSearch=64) kept recall@10 >= 0.999 against exact search on 100,000
    clustered 384-d users (benchmarks/bench_user_search.py) and >= 0.95 on 5,000 (the tests)."""

    def __init__(self, kind: str = "flat", *, nprobe: int = 32, ef_search: int = 64, ef_construction: int = 100,
                 seed: int = 0, **options: Any) -> None:
        self.spec = IndexSpec(kind=kind, metric="ip", nprobe=nprobe, ef_search=ef_search,
                              ef_construction=ef_construction, seed=seed, **options)
        self.ids: list[str] = []
        self.vectors = np.zeros((0, 0), dtype=np.float32)
        self.index: VectorIndex | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def build(self, ids: Sequence[str], vectors: np.ndarray) -> UserIndex:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(ids):
            raise InputError(f"expected one embedding per user id ({len(ids)}), got shape {vectors.shape}")
        if len(set(ids)) != len(ids):
            raise InputError("user ids in a user index must be distinct")
        self.ids = list(ids)
        self.vectors = normalize(vectors)
        self.index = VectorIndex(self.spec).build(self.vectors) if len(ids) else None
        return self

    def search(self, vectors: np.ndarray, m: int, exclude: Sequence[str | None] | None = None) -> list[list[tuple[str, float]]]:
        """The `m` most similar users to each row of `vectors`, best first, as (user id, cosine);
        `exclude[i]` (a user id) is never among row i's answers."""
        vectors = normalize(np.atleast_2d(np.asarray(vectors, dtype=np.float32)))
        if exclude is not None and len(exclude) != len(vectors):
            raise InputError(f"exclude needs one entry per query vector ({len(vectors)}), got {len(exclude)}")
        if self.index is None or m < 1:
            return [[] for _ in range(len(vectors))]
        scores, positions = self.index.search(vectors, m + 1)
        out = []
        for row, (row_scores, row_positions) in enumerate(zip(scores.tolist(), positions.tolist())):
            skip = exclude[row] if exclude is not None else None
            found = [(self.ids[p], s) for s, p in zip(row_scores, row_positions) if p >= 0 and self.ids[p] != skip]
            out.append(found[:m])
        return out
