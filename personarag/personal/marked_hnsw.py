"""An HNSW graph over positions 0..n-1, each owned by a user key: the user index kind "hnsw".

FAISS's HNSW cannot remove nodes, so a replaced or removed user's node is marked dead (owner -1),
filtered out at search by a bitmap selector, and the caller rebuilds once too many are dead. The
interface matches `refined_ivf.RefinedIVFPQ`, the other index whose rows are positions.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from personarag.errors import require
from personarag.personal.positional import Positions, replace_file


class MarkedHNSW(Positions):
    """Positions in a FAISS HNSW index and their owners' keys (-1 once dead)."""

    def __init__(self, index: Any, owner: np.ndarray) -> None:
        super().__init__(owner)
        self.index = index
        self._live_bits: np.ndarray | None = None  # packed live-position bitmap, cached between writes

    def set_ef_search(self, ef_search: int) -> None:
        require("faiss", "dense").downcast_index(self.index).hnsw.efSearch = ef_search

    def add(self, keys: Sequence[int], matrix: np.ndarray) -> None:
        self.index.add(matrix)
        self.append_owners(keys)
        self._live_bits = None

    def drop(self, keys: Sequence[int]) -> None:
        super().drop(keys)
        self._live_bits = None

    def vectors(self, keys: Sequence[int]) -> np.ndarray:
        return np.stack([self.index.reconstruct(self.position[int(k)]) for k in keys])

    def search(self, matrix: np.ndarray, k: int, hidden: Collection[int], *, ef_search: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, keys) of the `k` best live positions per row, leaving out `hidden` keys; key -1
        where fewer were found."""
        faiss = require("faiss", "dense")
        params = faiss.SearchParametersHNSW(efSearch=ef_search)
        if hidden or self.dead:
            if self._live_bits is None:
                self._live_bits = np.packbits(self.owner >= 0, bitorder="little")
            bitmap = self._live_bits
            if hidden:
                live = self.owner >= 0
                live[[self.position[k] for k in hidden]] = False
                bitmap = np.packbits(live, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(self.owner), faiss.swig_ptr(bitmap))
            selector.referenced_bitmap = bitmap  # the selector reads this buffer during search
            params.sel = selector
            params.referenced_selector = selector
        scores, labels = self.index.search(matrix, k, params=params)
        return scores, np.where(labels >= 0, self.owner[np.maximum(labels, 0)], -1)

    def save(self, directory: Path) -> None:
        faiss = require("faiss", "dense")
        replace_file(directory / "index.faiss", lambda p: faiss.write_index(self.index, str(p)))
        replace_file(directory / "positions.npy", lambda p: np.save(p, self.owner, allow_pickle=False))

    @classmethod
    def load(cls, directory: Path) -> MarkedHNSW:
        faiss = require("faiss", "dense")
        return cls(faiss.read_index(str(directory / "index.faiss")), np.load(directory / "positions.npy", allow_pickle=False))

