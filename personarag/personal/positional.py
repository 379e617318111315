"""What the user index's positional kinds share (`marked_hnsw.MarkedHNSW`, `refined_ivf.RefinedIVFPQ`):
rows are positions 0..n-1 owned by user keys, a replaced or removed user's row is marked dead
(owner -1) until the caller rebuilds, and their files are written so that a kill never leaves a
half-written one in place."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np


class Positions:
    """Owner key of each row (-1 once dead) and the row of each live key."""

    def __init__(self, owner: np.ndarray) -> None:
        self.owner = owner  # position -> user key, -1 once dead
        self.position = {int(k): p for p, k in enumerate(owner) if k >= 0}

    @property
    def rows(self) -> int:
        return len(self.owner)

    @property
    def dead(self) -> int:
        return len(self.owner) - len(self.position)

    def append_owners(self, keys: Sequence[int]) -> None:
        start = len(self.owner)
        self.owner = np.concatenate([self.owner, np.asarray(keys, dtype=np.int64)])
        self.position.update((int(k), start + n) for n, k in enumerate(keys))

    def drop(self, keys: Sequence[int]) -> None:
        self.owner[[self.position.pop(int(k)) for k in keys]] = -1


def replace_file(path: Path, write: Callable[[Path], object]) -> None:
    """`write` a temporary sibling (same suffix: np.save appends .npy otherwise), then rename it over `path`."""
    tmp = path.with_name(path.name + ".partial" + path.suffix)
    write(tmp)
    os.replace(tmp, path)
