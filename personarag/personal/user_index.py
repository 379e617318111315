"""Nearest users by embedding, kept up to date one user at a time: add, replace and remove by
user id, save beside a user store and load back. Embeddings are unit-normalised, so scores are
cosine similarities.

Each user id maps to a stable int64 key (a hash of the id, the same in every index and run).
"flat" is an `IndexIDMap2` over an exact index; "ivf" keeps FAISS's own ids with a hashtable
direct map, so a replace is `remove_ids` + `add_with_ids`; "hnsw" cannot remove nodes, so a
replaced or removed user's node is marked dead, filtered out at search, and the graph is rebuilt
once dead nodes pass `rebuild_fraction`. "auto" (the default) is exact below `exact_below`
users and AUTO_LARGE above, rebuilding when the size crosses that line; IVF is also rebuilt
when it outgrows its lists (k-means ran on a quarter of today's users or fewer). "ivf-pq" scans
4-bit PQ codes of many lists and re-scores the best candidates exactly (`refined_ivf`); like HNSW
it marks replaced users dead and rebuilds past `rebuild_fraction`.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from personarag.errors import InputError, require
from personarag.personal.marked_hnsw import MarkedHNSW
from personarag.personal.positional import replace_file
from personarag.personal.profiles import normalize
from personarag.personal.refined_ivf import RefinedIVFPQ
from personarag.retrievers.faiss_index import IndexSpec, auto_nlist, new_faiss_index

KINDS = ("auto", "flat", "ivf", "ivf-pq", "hnsw")
FORMAT = 1
#: IVF k-means trains on this many sampled users per list, for this many rounds: at 1,000,000
#: users (4,000 lists) a 256,000-user sample; training and adding took 3-4.5 minutes on 2 busy cores.
TRAIN_PER_LIST = 64
TRAIN_NITER = 10
#: The kind "auto" builds from `exact_below` users on (benchmarks/results/user_search.md): at
#: 1,000,000 users it alone met recall@10 >= 0.95 under 5 ms/query on the noisiest data measured.
AUTO_LARGE = "ivf-pq"
#: Below this many users "ivf-pq" builds an exact index: its 4-bit codebooks train on 16 centroids
#: per sub-quantizer, and a flat scan of so few users is fast anyway.
PQ_MIN_USERS = 500


def user_key(user_id: str) -> int:
    """The stable int64 FAISS id of a user id: 63 bits of its BLAKE2b hash."""
    return int.from_bytes(hashlib.blake2b(user_id.encode("utf-8"), digest_size=8).digest(), "little") & (2**63 - 1)


class UserIndex:
    """User ids and their embeddings in FAISS; `search` leaves out the asking user and hidden users.

    `kind`: "auto" (exact below `exact_below` users, else AUTO_LARGE), "flat", "ivf", "ivf-pq" or
    "hnsw". IVF: `nlist`, `nprobe`; IVF-PQ: `nlist`, `pq_nprobe`, `k_factor`; HNSW: M=`hnsw_m`,
    efConstruction, efSearch. At 1,000,000 clustered 384-d users (benchmarks/results/user_search.md)
    the "ivf-pq" default answers in about 2 ms/query on one thread with recall@10 0.959 where 11% of
    the exact neighbours lie outside the user's cluster (IVF-flat needs 18 ms/query for 0.956 there,
    and HNSW does not get there); it holds the float vectors beside its codes (1.6 GB).
    """

    def __init__(self, kind: str = "auto", *, nlist: int | None = None, nprobe: int = 32, hnsw_m: int = 32,
                 ef_search: int = 64, ef_construction: int = 100, exact_below: int = 20_000,
                 rebuild_fraction: float = 0.2, seed: int = 0, pq_nprobe: int = 256, k_factor: int = 20) -> None:
        if kind not in KINDS:
            raise InputError(f"user index kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if not 0 < rebuild_fraction <= 1:
            raise InputError(f"rebuild_fraction must be in (0, 1], got {rebuild_fraction!r}")
        if not isinstance(exact_below, int) or exact_below < 0:
            raise InputError(f"exact_below must be a non-negative integer, got {exact_below!r}")
        for name, value in (("pq_nprobe", pq_nprobe), ("k_factor", k_factor)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        self.kind = kind
        #: the "ivf-pq" search knobs: lists probed, and candidates re-scored exactly per wanted user
        self.refine = {"pq_nprobe": pq_nprobe, "k_factor": k_factor}
        self.exact_below = exact_below
        self.rebuild_fraction = rebuild_fraction
        # validated once here; the kind built is chosen per size
        self.options = IndexSpec(kind="flat", metric="ip", nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m,
                                 ef_search=ef_search, ef_construction=ef_construction, seed=seed).to_dict()
        self._reset()

    def _reset(self) -> None:
        self.index: Any = None  # a FAISS index (flat, ivf), or a MarkedHNSW / RefinedIVFPQ over positions
        self.built_kind: str | None = None
        self.nlist_used: int | None = None
        self.dim: int | None = None
        self._names: dict[int, str] = {}  # int64 key -> user id, live users only

    # --- state -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, user_id: object) -> bool:
        return isinstance(user_id, str) and self._names.get(user_key(user_id)) == user_id

    @property
    def ids(self) -> list[str]:
        return list(self._names.values())

    @property
    def spec(self) -> IndexSpec:
        """The IndexSpec of the kind built now (or that the next build would choose)."""
        kind = self.built_kind or self._choose_kind(len(self))
        return IndexSpec(**{**self.options, "kind": "ivf" if kind == "ivf-pq" else kind})

    @property
    def positional(self) -> bool:
        """Whether the index built keeps replaced users as dead rows until a rebuild (hnsw, ivf-pq)."""
        return self.built_kind in ("hnsw", "ivf-pq")

    @property
    def dead(self) -> int:
        """HNSW nodes / IVF-PQ rows of replaced or removed users still indexed (0 for other kinds)."""
        return self.index.dead if self.positional else 0

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """The stored (unit) embeddings of `ids`, in order; an unknown id is an InputError."""
        keys = self._known_keys(ids, "vectors")
        if not keys:
            return np.zeros((0, self.dim or 0), dtype=np.float32)
        if self.positional:
            return self.index.vectors(keys)
        return self.index.reconstruct_batch(np.asarray(keys, dtype=np.int64))

    # --- writes ------------------------------------------------------------------------------
    def build(self, ids: Sequence[str], vectors: np.ndarray) -> UserIndex:
        """Index exactly these users (replacing whatever was indexed)."""
        keys, matrix = self._check(ids, vectors, "build", check_dim=False)
        self._reset()
        if keys:
            self._build(keys, list(ids), matrix)
        return self

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, shared: Sequence[bool] | None = None) -> UserIndex:
        """Add new users and replace the vectors of known ones. With `shared`, users whose flag is
        False are removed (if indexed) instead, so the index holds only shareable users."""
        keys, matrix = self._check(ids, vectors, "upsert", check_dim=True)
        if shared is not None:
            if len(shared) != len(keys):
                raise InputError(f"upsert: `shared` needs one flag per user id ({len(keys)}), got {len(shared)}")
            private = [i for i, flag in zip(ids, shared) if not flag]
            self.remove([i for i in private if i in self], missing="ignore")
            keep = [n for n, flag in enumerate(shared) if flag]
            keys, ids, matrix = [keys[n] for n in keep], [ids[n] for n in keep], matrix[keep]
        if not keys:
            return self
        if self.index is None:
            self._build(keys, list(ids), matrix)
            return self
        known = [k for k in keys if k in self._names]
        if known:
            self._drop(known)
        self._add(keys, list(ids), matrix)
        self._maybe_rebuild()
        return self

    def remove(self, ids: Iterable[str], *, missing: str = "error") -> UserIndex:
        """Remove users by id. An id not in the index is an InputError, or skipped with missing="ignore"."""
        if missing not in ("error", "ignore"):
            raise InputError(f"remove: missing must be 'error' or 'ignore', got {missing!r}")
        ids = list(ids)
        if len(set(ids)) != len(ids):
            raise InputError("remove: the same user id appears twice in one call")
        if missing == "ignore":
            ids = [i for i in ids if i in self]
        keys = self._known_keys(ids, "remove")
        if keys:
            self._drop(keys)
            self._maybe_rebuild()
        return self

    # --- search --------------------------------------------------------------------------------
    def search(self, vectors: np.ndarray, m: int, exclude: Sequence[str | Collection[str] | None] | None = None,
               *, hide: Iterable[str] | None = None, params: dict[str, int] | None = None) -> list[list[tuple[str, float]]]:
        """The `m` most similar users to each row of `vectors`, best first, as (user id, cosine).

        `exclude[i]` (a user id, or several) is never among row i's answers (the asking user);
        `hide` (user ids, e.g. users not shared) is never among any row's answers. `params`
        overrides nprobe / ef_search for this call."""
        matrix = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if matrix.ndim != 2:
            raise InputError(f"search expects a (n, dim) matrix of query vectors, got shape {matrix.shape}")
        if exclude is not None and len(exclude) != len(matrix):
            raise InputError(f"exclude needs one entry per query vector ({len(matrix)}), got {len(exclude)}")
        if not isinstance(m, int) or isinstance(m, bool):
            raise InputError(f"m must be an integer, got {m!r}")
        if self.index is None or m < 1 or not len(matrix):
            return [[] for _ in range(len(matrix))]
        if matrix.shape[1] != self.dim:
            raise InputError(f"query vectors have dimension {matrix.shape[1]}, the user index has {self.dim}")
        matrix = normalize(np.ascontiguousarray(matrix))
        rows = [_as_set(e) for e in exclude] if exclude is not None else [frozenset()] * len(matrix)
        hide = [hide] if isinstance(hide, str) else list(hide or ())
        if not all(isinstance(h, str) for h in hide):
            raise InputError(f"hide takes user ids (strings), got {[h for h in hide if not isinstance(h, str)][:3]}")
        hidden = {key for key in map(user_key, hide) if key in self._names}
        k = min(m + max(len(r) for r in rows), len(self) - len(hidden))
        if k < 1:
            return [[] for _ in range(len(matrix))]
        if self.built_kind == "ivf-pq":
            return self._search_refined(matrix, m, rows, hidden, params)
        if self.built_kind == "hnsw":
            scores, labels = self.index.search(matrix, k, hidden, ef_search=self._overrides(params, "ef_search"))
        else:
            scores, labels = self.index.search(matrix, k, params=self._search_params(hidden, params))
        out = []
        for row_scores, row_labels, skip in zip(scores.tolist(), labels.tolist(), rows):
            found = []
            for score, label in zip(row_scores, row_labels):
                if label < 0:
                    continue
                name = self._names[label]
                if name not in skip:
                    found.append((name, score))
            out.append(found[:m])
        return out

    def _search_refined(self, matrix: np.ndarray, m: int, rows: list[frozenset[str]], hidden: set[int],
                        params: dict[str, int] | None) -> list[list[tuple[str, float]]]:
        params = dict(params or {})
        if set(params) - {"nprobe", "k_factor"}:
            raise InputError(f"ivf-pq search params may set nprobe or k_factor, got {sorted(set(params) - {'nprobe', 'k_factor'})}")
        skip = [hidden | {user_key(user_id) for user_id in row} for row in rows]
        found = self.index.search(matrix, m, skip, nprobe=params.get("nprobe", self.refine["pq_nprobe"]),
                                  k_factor=params.get("k_factor", self.refine["k_factor"]))
        return [[(self._names[key], score) for key, score in row] for row in found]

    # --- persistence ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the index into directory `path`: index.faiss, users.json (ids), hnsw positions
        (positions.npy) and config.json (options, kind built, counts, library versions)."""
        faiss = require("faiss", "dense", purpose="the user index")
        directory = Path(path)
        if directory.exists() and not directory.is_dir():
            raise InputError(f"user index path {directory} is a file; give a directory")
        directory.mkdir(parents=True, exist_ok=True)
        config = {
            "format": FORMAT, "kind": self.kind, "built_kind": self.built_kind, "options": self.options,
            "exact_below": self.exact_below, "rebuild_fraction": self.rebuild_fraction, "refine": self.refine,
            "dim": self.dim, "users": len(self), "dead": self.dead, "nlist_used": self.nlist_used,
            "key": "blake2b-8 & (2**63-1)", "versions": _versions(),
        }
        # config.json goes last: a directory without it (or with a stale one) fails to load loudly
        if self.positional:
            self.index.save(directory)
        elif self.index is not None:
            replace_file(directory / "index.faiss", lambda p: faiss.write_index(self.index, str(p)))
        ids = [self._names[int(k)] if k >= 0 else None for k in self.index.owner] if self.built_kind == "hnsw" else self.ids
        replace_file(directory / "users.json", lambda p: p.write_text(json.dumps(ids) + "\n", encoding="utf-8"))
        replace_file(directory / "config.json", lambda p: p.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8"))
        return directory

    @classmethod
    def load(cls, path: str | Path, *, nprobe: int | None = None, ef_search: int | None = None) -> UserIndex:
        """Read a user index written by `save`; nprobe / ef_search override the saved knobs."""
        faiss = require("faiss", "dense", purpose="the user index")
        directory = Path(path)
        config_path = directory / "config.json"
        if not config_path.is_file():
            raise InputError(f"no saved user index at {directory} (expected {config_path.name} in it)")
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if config.get("format") != FORMAT:
            raise InputError(f"user index at {directory} has format {config.get('format')!r}; this version reads {FORMAT}")
        options = dict(config["options"])
        options.pop("kind", None), options.pop("metric", None)
        options["nprobe"] = nprobe if nprobe is not None else options["nprobe"]
        options["ef_search"] = ef_search if ef_search is not None else options["ef_search"]
        out = cls(config["kind"], exact_below=config["exact_below"], rebuild_fraction=config["rebuild_fraction"],
                  **options, **config.get("refine", {}))
        if config["built_kind"] is None:
            return out
        if config["built_kind"] == "ivf-pq":
            out.index = RefinedIVFPQ.load(directory)
        elif config["built_kind"] == "hnsw":
            out.index = MarkedHNSW.load(directory)
        else:
            out.index = faiss.read_index(str(directory / "index.faiss"))
        out.built_kind, out.nlist_used, out.dim = config["built_kind"], config["nlist_used"], config["dim"]
        ids = json.loads((directory / "users.json").read_text(encoding="utf-8"))
        if out.built_kind == "ivf-pq":
            out._names = {user_key(name): name for name in ids}
            consistent = set(out._names) == set(out.index.position)
        elif out.built_kind == "hnsw":
            out._names = {int(k): name for k, name in zip(out.index.owner, ids) if k >= 0}
            consistent = out.index.rows == out.index.index.ntotal
        else:
            out._names = {user_key(name): name for name in ids}
            consistent = len(out._names) == out.index.ntotal
        if not consistent or len(out._names) != config["users"]:
            rows = out.index.rows if out.positional else out.index.ntotal
            raise InputError(f"user index at {directory} is inconsistent: config says {config['users']} users, "
                             f"users.json has {len(out._names)}, the FAISS index {rows} rows")
        out._apply_search_params()
        return out

    # --- internals -----------------------------------------------------------------------------
    def _choose_kind(self, n: int) -> str:
        if self.kind == "ivf-pq" and n < PQ_MIN_USERS:
            return "flat"
        if self.kind != "auto":
            return self.kind
        return "flat" if n < self.exact_below else AUTO_LARGE

    def _check(self, ids: Sequence[str], vectors: np.ndarray, where: str, check_dim: bool) -> tuple[list[int], np.ndarray]:
        if isinstance(ids, str):
            raise InputError(f"{where}: expected a sequence of user ids, got one string {ids!r}")
        ids = list(ids)
        for user_id in ids:
            if not isinstance(user_id, str) or not user_id:
                raise InputError(f"{where}: user ids must be non-empty strings, got {user_id!r}")
        if len(set(ids)) != len(ids):
            dup = next(i for i, count in Counter(ids).items() if count > 1)
            raise InputError(f"{where}: user ids in one call must be distinct; {dup!r} appears twice")
        matrix = np.asarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or len(matrix) != len(ids):
            raise InputError(f"{where}: expected one embedding per user id ({len(ids)}), got shape {matrix.shape}")
        if len(ids) and (matrix.shape[1] == 0 or not np.isfinite(matrix).all()):
            raise InputError(f"{where}: embeddings must be non-empty and finite, got shape {matrix.shape} with NaN/inf or no columns")
        if check_dim and self.dim is not None and len(ids) and matrix.shape[1] != self.dim:
            raise InputError(f"{where}: embeddings have dimension {matrix.shape[1]}, the user index has {self.dim}")
        keys = [user_key(i) for i in ids]
        for key, user_id in zip(keys, ids):
            other = self._names.get(key)
            if other is not None and other != user_id:  # 63-bit hash collision: about 1 in 10^7 at a billion users
                raise InputError(f"{where}: user ids {user_id!r} and {other!r} hash to the same key")
        return keys, np.ascontiguousarray(normalize(matrix)) if len(ids) else matrix

    def _known_keys(self, ids: Sequence[str], where: str) -> list[int]:
        keys = []
        for user_id in ids:
            key = user_key(user_id) if isinstance(user_id, str) else None
            if key is None or self._names.get(key) != user_id:
                raise InputError(f"{where}: user {user_id!r} is not in the user index ({len(self)} users)")
            keys.append(key)
        return keys

    def _build(self, keys: list[int], ids: list[str], matrix: np.ndarray) -> None:
        faiss = require("faiss", "dense", purpose="the user index")
        self._reset()
        kind = self._choose_kind(len(keys))
        if kind == "ivf-pq":
            nlist = min(self.options["nlist"] or auto_nlist(len(keys)), len(keys))
            self.index = RefinedIVFPQ.trained(matrix, nlist=nlist, train_size=TRAIN_PER_LIST * nlist,
                                              niter=TRAIN_NITER, seed=self.options["seed"])
            self.built_kind, self.nlist_used, self.dim = kind, nlist, matrix.shape[1]
            self._add(keys, ids, matrix)
            return
        spec = IndexSpec(**{**self.options, "kind": kind})
        if kind == "ivf" and spec.nlist is not None and spec.nlist > len(keys):
            spec = IndexSpec(**{**self.options, "kind": kind, "nlist": None})  # grows back at the next rebuild
        index, nlist = new_faiss_index(spec, matrix, train_size=TRAIN_PER_LIST * (spec.nlist or auto_nlist(len(keys))),
                                       niter=TRAIN_NITER)
        if kind == "flat":
            index = faiss.IndexIDMap2(index)
        elif kind == "ivf":
            index.set_direct_map_type(faiss.DirectMap.Hashtable)
        elif kind == "hnsw":
            index = MarkedHNSW(index, np.zeros(0, dtype=np.int64))
        self.index, self.built_kind, self.nlist_used, self.dim = index, kind, nlist, matrix.shape[1]
        self._add(keys, ids, matrix)
        self._apply_search_params()

    def _add(self, keys: list[int], ids: list[str], matrix: np.ndarray) -> None:
        if self.positional:
            self.index.add(keys, matrix)
        else:
            self.index.add_with_ids(matrix, np.asarray(keys, dtype=np.int64))
        self._names.update(zip(keys, ids))

    def _drop(self, keys: list[int]) -> None:
        faiss = require("faiss", "dense")
        if self.positional:
            self.index.drop(keys)
        else:
            removed = self.index.remove_ids(faiss.IDSelectorArray(np.asarray(keys, dtype=np.int64)))
            if removed != len(keys):
                raise RuntimeError(f"user index: removed {removed} of {len(keys)} users from FAISS")
        for key in keys:
            del self._names[key]

    def _maybe_rebuild(self) -> None:
        n = len(self)
        if n == 0:
            self._reset()
            return
        kind = self._choose_kind(n)
        stale = kind != self.built_kind and not (self.kind == "auto" and self.built_kind != "flat" and n >= self.exact_below // 2)
        if self.positional:
            stale = stale or self.dead > self.rebuild_fraction * self.index.rows
        if self.built_kind in ("ivf", "ivf-pq"):  # grown about 4x since k-means (or trained on fewer users than nlist)
            wanted = self.options["nlist"] or auto_nlist(n)
            stale = stale or (wanted > 2 * (self.nlist_used or 1) and n >= wanted)
        if stale:
            ids = self.ids
            keys = [user_key(i) for i in ids]
            self._build(keys, ids, self.vectors(ids))

    def _apply_search_params(self) -> None:
        faiss = require("faiss", "dense")
        if self.built_kind == "ivf":
            self.index.nprobe = min(self.options["nprobe"], self.index.nlist)
        elif self.built_kind == "hnsw":
            self.index.set_ef_search(self.options["ef_search"])

    def _overrides(self, overrides: dict[str, int] | None, name: str) -> int:
        """The search knob `name` (nprobe or ef_search) for one call: `overrides` or the index's own."""
        overrides = dict(overrides or {})
        unknown = set(overrides) - {"nprobe", "ef_search"}
        if unknown:
            raise InputError(f"search params may set nprobe or ef_search, got {sorted(unknown)}")
        return overrides.get(name, self.options[name])

    def _search_params(self, hidden: set[int], overrides: dict[str, int] | None) -> Any:
        """FAISS search parameters of a flat or IVF index: nprobe, and a selector leaving out `hidden` keys."""
        faiss = require("faiss", "dense")
        nprobe = self._overrides(overrides, "nprobe")
        selector = None
        if hidden:
            batch = faiss.IDSelectorBatch(np.asarray(sorted(hidden), dtype=np.int64))
            selector = faiss.IDSelectorNot(batch)
            selector.referenced_batch = batch
        if self.built_kind == "ivf":
            params = faiss.SearchParametersIVF(nprobe=min(nprobe, self.index.nlist))
        elif not hidden:
            return None
        else:
            params = faiss.SearchParameters()
        if selector is not None:
            params.sel = selector
            params.referenced_selector = selector
        return params

def _as_set(entry: str | Collection[str] | None) -> frozenset[str]:
    if entry is None:
        return frozenset()
    if isinstance(entry, str):
        return frozenset((entry,))
    return frozenset(entry)


def _versions() -> dict[str, str]:
    import faiss

    from personarag import __version__

    return {"faiss": faiss.__version__, "numpy": np.__version__, "personarag": __version__}
