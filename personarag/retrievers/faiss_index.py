"""FAISS indexes over float32 matrices: exact (flat), inverted lists (IVF) and graphs (HNSW).

Shared by the dense retriever (documents) and the collaborative retriever (users). Rows are
addressed by position; callers keep their own position -> id table. Scores are "higher is
better": inner products for metric "ip", negated squared L2 distances for metric "l2".
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from personarag.errors import InputError, require

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)

KINDS = ("flat", "ivf", "hnsw")
METRICS = ("ip", "l2")
#: FAISS k-means wants about this many training points per centroid.
MIN_POINTS_PER_CENTROID = 39


def auto_nlist(n: int) -> int:
    """nlist chosen from the number of vectors: about 4*sqrt(n), but at most n/39 so every
    centroid has enough training points, and at least 1."""
    return max(1, min(int(round(4 * math.sqrt(n))), n // MIN_POINTS_PER_CENTROID))


@dataclass(frozen=True)
class IndexSpec:
    """How to build an index. nlist=None picks `auto_nlist(n)`; nprobe / ef_search are search-time knobs."""

    kind: str = "flat"
    metric: str = "ip"
    nlist: int | None = None
    nprobe: int = 8
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"index kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.metric not in METRICS:
            raise InputError(f"index metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        for name in ("nprobe", "hnsw_m", "ef_construction", "ef_search"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        if self.nlist is not None and (not isinstance(self.nlist, int) or isinstance(self.nlist, bool) or self.nlist < 1):
            raise InputError(f"nlist must be a positive integer or None (chosen from the data size), got {self.nlist!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_matrix(vectors: Any, what: str) -> np.ndarray:
    np = require("numpy", "dense")
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise InputError(f"{what} must be a non-empty 2-d array (n, dim), got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise InputError(f"{what} contains NaN or infinite values")
    return matrix


def new_faiss_index(spec: IndexSpec, matrix: np.ndarray, *, train_size: int | None = None,
                    niter: int | None = None) -> tuple[Any, int | None]:
    """An empty FAISS index for `spec` over `matrix`'s dimension, trained on `matrix` when the
    kind needs training (IVF); returns (index, nlist or None). `train_size` trains IVF on a
    seeded sample of that many rows (k-means time grows with it), `niter` sets k-means rounds;
    both default to FAISS's own choices. Nothing is added."""
    faiss = require("faiss", "dense", purpose="vector indexes")
    n, dim = matrix.shape
    metric = faiss.METRIC_INNER_PRODUCT if spec.metric == "ip" else faiss.METRIC_L2
    if spec.kind == "flat":
        return (faiss.IndexFlatIP(dim) if spec.metric == "ip" else faiss.IndexFlatL2(dim)), None
    if spec.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, spec.hnsw_m, metric)
        index.hnsw.efConstruction = spec.ef_construction
        return index, None
    nlist = spec.nlist if spec.nlist is not None else auto_nlist(n)
    if nlist > n:
        raise InputError(
            f"IVF index with nlist={nlist} needs at least {nlist} vectors to train, got {n}; "
            f"lower nlist (about {auto_nlist(n)} suits {n} vectors), pass nlist=None to choose "
            "it from the data size, or use index='flat'"
        )
    if n < MIN_POINTS_PER_CENTROID * nlist:
        logger.warning(
            "IVF: %d vectors for nlist=%d is fewer than FAISS's %d per centroid; clustering may be poor",
            n, nlist, MIN_POINTS_PER_CENTROID,
        )
    quantizer = faiss.IndexFlatIP(dim) if spec.metric == "ip" else faiss.IndexFlatL2(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, metric)  # the wrapper keeps `quantizer` referenced
    index.cp.seed = spec.seed
    if niter is not None:
        index.cp.niter = niter
    train = matrix
    if train_size is not None and n > max(train_size, nlist):
        np = require("numpy", "dense")
        rows = np.random.default_rng(spec.seed).choice(n, size=max(train_size, nlist), replace=False)
        train = matrix[np.sort(rows)]
    index.train(train)
    return index, nlist


class VectorIndex:
    """A FAISS index plus the spec that built it; search returns (scores, positions) with -1 padding removed."""

    def __init__(self, spec: IndexSpec | None = None, **spec_fields: Any) -> None:
        if spec is not None and spec_fields:
            raise InputError("give either an IndexSpec or its fields as keywords, not both")
        self.spec = spec or IndexSpec(**spec_fields)
        self.index: Any = None
        self.nlist_used: int | None = None

    @property
    def ntotal(self) -> int:
        return 0 if self.index is None else int(self.index.ntotal)

    @property
    def dim(self) -> int | None:
        return None if self.index is None else int(self.index.d)

    def build(self, vectors: Any) -> VectorIndex:
        matrix = _as_matrix(vectors, "vectors")
        index, self.nlist_used = new_faiss_index(self.spec, matrix)
        index.add(matrix)
        self.index = index
        self._apply_search_params()
        return self

    def _apply_search_params(self) -> None:
        faiss = require("faiss", "dense")
        if self.spec.kind == "ivf":
            ivf = faiss.extract_index_ivf(self.index)
            ivf.nprobe = min(self.spec.nprobe, ivf.nlist)
            self.nlist_used = int(ivf.nlist)
        elif self.spec.kind == "hnsw":
            faiss.downcast_index(self.index).hnsw.efSearch = self.spec.ef_search

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows for each query row: (scores, positions), both (n_queries, min(k, ntotal)).

        Graph/IVF indexes may find fewer than k rows; those slots are position -1, score -inf.
        """
        np = require("numpy", "dense")
        if self.index is None:
            raise InputError("the vector index is empty: call build(vectors) or load(path) first")
        matrix = _as_matrix(queries, "queries")
        if matrix.shape[1] != self.index.d:
            raise InputError(f"queries have dimension {matrix.shape[1]}, the index has {self.index.d}")
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise InputError(f"k must be a positive integer, got {k!r}")
        k = min(k, self.ntotal)
        scores, positions = self.index.search(matrix, k)
        scores = scores.astype(np.float32, copy=False)
        if self.spec.metric == "l2":
            scores = -scores
        scores[positions < 0] = -np.inf
        return scores, positions

    def save(self, path: str | Path) -> Path:
        """Write the index to `path` and its spec beside it (`path` + '.json')."""
        faiss = require("faiss", "dense")
        if self.index is None:
            raise InputError("nothing to save: the vector index was never built")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        faiss.write_index(self.index, str(tmp))
        tmp.replace(path)
        meta = {"spec": self.spec.to_dict(), "ntotal": self.ntotal, "dim": self.dim, "faiss": faiss.__version__}
        Path(str(path) + ".json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path, *, nprobe: int | None = None, ef_search: int | None = None) -> VectorIndex:
        """Read an index written by `save`; nprobe / ef_search override the saved search knobs."""
        faiss = require("faiss", "dense")
        path = Path(path)
        meta_path = Path(str(path) + ".json")
        if not path.is_file() or not meta_path.is_file():
            raise InputError(f"no saved vector index at {path} (expected {path.name} and {meta_path.name})")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        fields = dict(meta["spec"])
        if nprobe is not None:
            fields["nprobe"] = nprobe
        if ef_search is not None:
            fields["ef_search"] = ef_search
        out = cls(IndexSpec(**fields))
        out.index = faiss.read_index(str(path))
        out._apply_search_params()
        return out

    def __repr__(self) -> str:
        return f"VectorIndex({self.spec.kind}, metric={self.spec.metric}, ntotal={self.ntotal})"


def build_index(vectors: Any, kind: str = "flat", metric: str = "ip", **options: Any) -> VectorIndex:
    """Build a VectorIndex over a float32 (n, dim) matrix; options are IndexSpec fields."""
    return VectorIndex(IndexSpec(kind=kind, metric=metric, **options)).build(vectors)
