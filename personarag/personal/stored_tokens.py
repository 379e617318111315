"""History BM25's derived data kept in a user store: a `TokenCache` whose vocabulary and bags
are the store's (`store_tokens` tables, one set per tokenizer fingerprint), and users'
postings saved and read back in bulk, so a fresh process on a warm store tokenizes and
indexes only what changed.

`StoredTokens(store, cache)` reads the fingerprint's vocabulary into an empty cache with
the first postings (one read) or bags; `bags_of(documents)` reads the bags the cache lacks from the store (one query per 500
hashes), tokenizes the rest and saves them; `load_postings` / `save_postings` move
`ProfileBM25` segments as one packed record array per user, decoded in one `np.frombuffer`
over all users read. A user's postings are re-used only when the history asked about has
the digest (`history_digest`: its texts, in order) they were built from and the user's
stored history version has not moved since they were written.
"""

from __future__ import annotations

import logging
import sys
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from personarag.errors import InputError, require
from personarag.personal.tokens import Bags, TokenCache, content_hash
from personarag.types import Document

logger = logging.getLogger(__name__)

FORMAT = "bm25-v1"  # bump when bags, postings or their packing change
POSTING = np.dtype([("term", "<i4"), ("row", "<i4"), ("tf", "<i4"), ("weight", "<f8")])

Segment = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # as profile_bm25.Segment


def tokenizer_fingerprint(name: str) -> str:
    """What stored bags are filed under: the format, the tokenizer's name ("split", "words+english")
    and, for a stemmed one, the PyStemmer version (another version may stem differently)."""
    if not isinstance(name, str) or not name:
        raise InputError(f"a stored token cache needs the tokenizer's name (TokenCache(..., name)), got {name!r}")
    parts = [FORMAT, name]
    if "+" in name:
        from importlib.metadata import PackageNotFoundError, version

        try:
            parts.append(f"PyStemmer={version('PyStemmer')}")
        except PackageNotFoundError:
            parts.append("PyStemmer=?")
    return "|".join(parts)


def history_digest(history: Sequence[Document]) -> str:
    """A 128-bit xxh3 digest of a history's titles and texts in order (their lengths, then the
    strings: no `full_text` is built), prefixed with its name. It only guards against re-using
    postings for a history that differs from the one they were built from (xxh3 reads ~10x faster
    than sha256: a warm LaMP_5 run hashes 9 MB of query histories); a digest written by another
    algorithm never matches, so such postings are rebuilt, not mis-read."""
    xxhash = require("xxhash", "store", purpose="history digests of stored BM25 postings")
    parts = [d.title or "" for d in history] + [d.text for d in history]
    lengths = array("q", map(len, parts))  # np.fromiter costs ~15 us per call here, 720 calls on LaMP_5
    if sys.byteorder == "big":
        lengths.byteswap()
    digest = xxhash.xxh3_128(lengths.tobytes())
    digest.update("".join(parts).encode("utf-8", "surrogatepass"))
    return "xxh3_128:" + digest.hexdigest()


@dataclass(frozen=True)
class LoadedPostings:
    """Stored postings of several users, concatenated in the order they were asked for."""

    users: list[str]
    arrays: tuple[np.ndarray, ...]  # term, row, weight, tf per posting; item lengths
    post_sizes: np.ndarray  # postings per user
    row_sizes: np.ndarray  # history items per user

    def segments(self) -> dict[str, Segment]:
        post = np.cumsum(np.concatenate([[0], self.post_sizes])).tolist()
        cut = np.cumsum(np.concatenate([[0], self.row_sizes])).tolist()
        term, row, weight, tf, lengths = self.arrays
        return {
            u: (term[post[i]:post[i + 1]], row[post[i]:post[i + 1]], weight[post[i]:post[i + 1]],
                tf[post[i]:post[i + 1]], lengths[cut[i]:cut[i + 1]])
            for i, u in enumerate(self.users)
        }


def params_key(k1: float, b: float, epsilon: float) -> str:
    return f"k1={k1!r},b={b!r},epsilon={epsilon!r}"


class StoredTokens:
    """A token cache backed by a `UserStore` (see the module docstring). Counters for tests and
    benchmarks: `bags_read`, `bags_saved`, `postings_read`, `postings_saved`."""

    def __init__(self, store: Any, cache: TokenCache) -> None:
        if len(cache) or cache.terms:
            raise InputError(f"a stored token cache starts empty; this one holds {len(cache)} texts "
                             f"and {len(cache.terms)} terms")
        self.store, self.cache = store, cache
        self.fingerprint = tokenizer_fingerprint(cache.name)
        self.terms_read = False  # the stored vocabulary is read with the first postings (one snapshot) or bags
        self.bags_read = self.bags_saved = self.postings_read = self.postings_saved = 0

    def read_terms(self) -> None:
        """Read the stored vocabulary (the first time) or the terms other processes appended since."""
        self.cache.extend_terms(self.store.token_terms(self.fingerprint, len(self.cache.terms)))
        self.terms_read = True

    def _catch_up(self, needed: int) -> None:
        """Make sure the vocabulary reaches term id `needed`, reading what was appended since."""
        if needed >= len(self.cache.terms):
            self.read_terms()
        if needed >= len(self.cache.terms):
            raise InputError(f"stored data of {self.fingerprint!r} names term {needed}, but the stored vocabulary "
                             f"has {len(self.cache.terms)} terms; the store's token tables are damaged")

    def bags_of(self, documents: Sequence[Document]) -> Bags:
        """`TokenCache.bags_of` keyed by content hash, through the store."""
        cache = self.cache
        if not self.terms_read:
            self.read_terms()
        keys = [content_hash(d.full_text) for d in documents]
        missing = {key: i for i, key in enumerate(keys) if key not in cache}
        if missing:
            stored = self.store.get_token_bags(self.fingerprint, [key.hex() for key in missing])
            if stored:
                top = max((int(packed.max() >> 32) for packed, _ in stored.values() if len(packed)), default=-1)
                self._catch_up(top)
                cache.add_packed({bytes.fromhex(key): value for key, value in stored.items()})
                self.bags_read += len(stored)
            todo = [key for key in missing if key not in cache]
            if todo:
                self._tokenize_and_save(todo, [documents[missing[key]].full_text for key in todo])
        return cache.bags_of(documents, keys)

    def _tokenize_and_save(self, keys: list[bytes], texts: list[str]) -> None:
        cache = self.cache
        known = len(cache.terms)
        cache.bags(texts, keys)
        new_terms = cache.terms[known:]
        packed = {key.hex(): value for key, value in cache.packed(keys).items()}  # type: ignore[union-attr]
        terms, new_ids = self.store.put_token_bags(self.fingerprint, known, new_terms, packed)
        if terms != new_terms:  # another process appended terms meanwhile: take its numbering
            cache.renumber(known, terms, new_ids, keys)
        self.bags_saved += len(keys)

    def load_postings(self, params: str, digests: Mapping[str, str]) -> LoadedPostings:
        """Stored postings of the users (in `digests`' order) whose stored postings were built
        from a history with the given digest and are of their current history version."""
        terms, rows = self.store.get_bm25_postings(self.fingerprint, params, list(digests), len(self.cache.terms))
        self.cache.extend_terms(terms)  # read in the same snapshot as the postings
        self.terms_read = True
        users = [u for u in digests if u in rows and rows[u][0] == digests[u]]
        if users:
            self._catch_up(max(rows[u][1] for u in users) - 1)
        records = np.frombuffer(b"".join(rows[u][2] for u in users), dtype=POSTING)
        lengths = np.frombuffer(b"".join(rows[u][3] for u in users), dtype="<f8")
        self.postings_read += len(users)
        # the int32 fields stay int32 (numpy widens them where they meet int64 or float64)
        arrays = (records["term"], records["row"], records["weight"], records["tf"], lengths)
        return LoadedPostings(users, arrays,
                              np.fromiter((len(rows[u][2]) // POSTING.itemsize for u in users), np.int64, len(users)),
                              np.fromiter((len(rows[u][3]) // 8 for u in users), np.int64, len(users)))

    def save_postings(self, params: str, segments: Mapping[str, tuple[str, Segment]]) -> None:
        """Save users' segments: user id -> (digest of the history indexed, segment); users not
        in the store are skipped."""
        rows = {}
        for user_id, (digest, (term, row, weight, tf, lengths)) in segments.items():
            records = np.empty(len(term), dtype=POSTING)
            records["term"], records["row"], records["tf"], records["weight"] = term, row, tf, weight
            rows[user_id] = (digest, len(self.cache.terms), records.tobytes(), np.asarray(lengths, dtype="<f8").tobytes())
        if rows:
            self.postings_saved += self.store.put_bm25_postings(self.fingerprint, params, rows)
