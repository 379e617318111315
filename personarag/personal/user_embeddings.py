"""User embeddings from the embeddings of their history items (no training).

`profile_embedding` is the mean of the item embeddings, optionally recency-weighted: item
weights decay exponentially with the item's recency rank (`by="rank"`: newest first, by
`meta["date"]`, undated last) or with its age in years before the user's newest dated item
(`by="date"`; undated items get the oldest dated item's weight). Dates are read by
`personal.dates.parse_date`; an unreadable one is an InputError naming the item. The result
is unit-normalised, so inner products between users, and between users and items, are cosines.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from personarag.errors import InputError
from personarag.personal.dates import item_dates, parse_date, sort_dates  # noqa: F401  (parse_date re-exported)
from personarag.personal.profiles import normalize
from personarag.types import Document

RECENCY_BY = ("rank", "date")


def recency_weights(history: Sequence[Document], decay: float, by: str = "rank") -> np.ndarray:
    """exp(-decay * age) per item, in history order; all ones when decay is 0."""
    if by not in RECENCY_BY:
        raise InputError(f"recency by must be one of {', '.join(RECENCY_BY)}, got {by!r}")
    if not isinstance(decay, (int, float)) or decay < 0:
        raise InputError(f"recency decay must be a number >= 0, got {decay!r}")
    n = len(history)
    if decay == 0 or n == 0:
        return np.ones(n)
    if by == "rank":
        age = np.empty(n)
        age[np.asarray(sort_dates(history))] = np.arange(n)
    else:
        dates = item_dates(history)
        known = [d for d in dates if d is not None]
        if not known:
            return np.ones(n)
        newest = max(known)
        ages = [(newest - d).total_seconds() / 86400 / 365.25 if d is not None else None for d in dates]
        oldest = max(a for a in ages if a is not None)
        age = np.asarray([oldest if a is None else a for a in ages])
    return np.exp(-decay * age)


def profile_embedding(item_embeddings: np.ndarray, history: Sequence[Document], decay: float = 0.0,
                      by: str = "rank") -> np.ndarray:
    """The (recency-weighted) mean of a user's item embeddings, unit-normalised."""
    items = np.asarray(item_embeddings, dtype=np.float32)
    if items.ndim != 2 or len(items) != len(history):
        raise InputError(f"expected one embedding per history item ({len(history)}), got shape {items.shape}")
    if len(items) == 0:
        raise InputError("an empty history has no profile embedding")
    weights = recency_weights(history, decay, by).astype(np.float32)
    return normalize(weights @ items / weights.sum())
