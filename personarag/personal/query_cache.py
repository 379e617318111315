"""An LRU cache of query vectors keyed by a hash of the query text: a repeated query (a user
retrying, a popular question, a benchmark rerun) skips the encoder. Unique queries gain nothing,
so it is off unless asked for (`CollaborativeRetriever(query_cache=N)`)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

from personarag.errors import InputError


class QueryVectorCache:
    """`vectors(texts, encode)`: one vector per text; `encode(list of texts) -> (n, dim)` runs on misses only."""

    def __init__(self, size: int) -> None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InputError(f"query_cache (query vectors kept) must be an integer >= 0, got {size!r}")
        self.size = size
        self._vectors: OrderedDict[bytes, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._vectors)

    def vectors(self, texts: Sequence[str], encode: Callable[[list[str]], np.ndarray]) -> list[np.ndarray]:
        if not texts:
            return []
        if not self.size:
            return list(encode(list(texts)))
        keys = [hashlib.sha256(t.encode("utf-8")).digest() for t in texts]
        text_of = dict(zip(keys, texts))
        missing = [k for k in text_of if k not in self._vectors]
        fresh = dict(zip(missing, encode([text_of[k] for k in missing]))) if missing else {}
        out = [fresh[k] if k in fresh else self._vectors[k] for k in keys]
        for key in keys:  # most recently asked last; evict from the front
            self._vectors[key] = fresh.get(key, self._vectors.get(key))  # type: ignore[assignment]
            self._vectors.move_to_end(key)
        while len(self._vectors) > self.size:
            self._vectors.popitem(last=False)
        return out
