"""Token ids of texts, cached by content: a text is tokenized once, however often the history
holding it is (re-)indexed.

`TokenCache` maps a text's key -- in a process the text itself (or a document's title and
text), in a user store its content hash (`content_hash`: sha256 of the UTF-8 bytes) -- to the
text's bag of words as rank_bm25 sees it: its distinct term ids in order of first occurrence,
their counts and its token count, which is all per-profile BM25 needs (rank_bm25 keeps one
insertion-ordered Counter per document). One cache serves one tokenizer; its vocabulary
(`terms`, term id = position) and bags are plain data (`export` / `load`), so a user store can
keep them beside its items and a later process tokenizes nothing it has seen. `postings`
keeps, per user id, the BM25 postings of that user's current history over this vocabulary,
so a fresh index re-uses every history that did not change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from itertools import chain, repeat

import numpy as np

from personarag.errors import InputError
from personarag.personal.bm25_arrays import count_in_order
from personarag.types import Document

_TF_BITS = 32  # an exported bag entry packs term << 32 | count into one int64


def _hash_of_key(key: Hashable) -> bytes:
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return content_hash(key)
    title, text = key  # type: ignore[misc]  # a document's (title, text), as Document.full_text joins them
    return content_hash(f"{title}\n{text}" if title else text)


def content_hash(text: str) -> bytes:
    """The key a store files a text's bag under: sha256 of its UTF-8 bytes (lone surrogates kept)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True)
class Bags:
    """Bags of several texts, concatenated: `terms[i]` occurs `counts[i]` times in the text
    `np.repeat(arange(n), entries)[i]`; each text's terms in order of first occurrence."""

    terms: np.ndarray  # int32 term ids
    counts: np.ndarray  # int32 occurrences
    entries: np.ndarray  # int64 distinct terms per text
    lengths: np.ndarray  # float64 tokens per text


class _Vocabulary(dict):
    """term -> id; an unseen term gets the next id (looked up in C, numbered in Python once)."""

    def __init__(self, terms: list[str]) -> None:
        super().__init__(zip(terms, range(len(terms))))
        self.terms = terms
        if len(self) != len(terms):
            raise InputError(f"a token cache vocabulary lists each term once; got {len(terms) - len(self)} duplicates")

    def __missing__(self, term: str) -> int:
        ident = self[term] = len(self.terms)
        self.terms.append(term)
        return ident


class TokenCache:
    """Bags of words of texts over one tokenizer's vocabulary, keyed by the text (or a
    document's title and text) in a process, by `content_hash` when a store supplies keys."""

    def __init__(self, tokenizer: Callable[[str], list[str]], name: str = "") -> None:
        self.tokenize = tokenizer
        self.name = name  # the tokenizer's description; a stored cache is only valid for it
        self.vocab = _Vocabulary([])
        self._bags: dict[Hashable, tuple[np.ndarray, np.ndarray, int]] = {}  # key -> (terms, counts, length)
        self.tokenized = 0  # texts tokenized so far (cache misses), for tests and benchmarks
        # user id -> (the history, (k1, b, epsilon), that history's BM25 postings over this
        # vocabulary): re-used while a user comes with an equal history, replaced when it
        # changes (filled and read by ProfileBM25)
        self.postings: dict[str, tuple[Sequence[Document], tuple[float, float, float], tuple[np.ndarray, ...]]] = {}

    def __len__(self) -> int:
        return len(self._bags)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._bags

    @property
    def terms(self) -> list[str]:
        return self.vocab.terms

    def bags(self, texts: Sequence[str], keys: Sequence[Hashable] | None = None) -> Bags:
        """The bags of `texts` (in order), tokenizing only texts not cached yet. `keys`, one per
        text: what the cache files each under -- a content hash a user store supplies, or by
        default the text itself (Python hashes a string object once, so a repeated lookup is
        free). Keys of both kinds in one cache only cost extra tokenizing, never wrong bags."""
        return self._bags_for(list(texts) if keys is None else list(keys), texts.__getitem__)

    def bags_of(self, documents: Sequence[Document], keys: Sequence[Hashable] | None = None) -> Bags:
        """`bags` of the documents' `full_text`, keyed by default by (title, text), so that a
        cached document costs no string building or hashing."""
        if keys is None:
            keys = [(d.title, d.text) for d in documents]
        return self._bags_for(list(keys), lambda i: documents[i].full_text)

    def _bags_for(self, keys: list[Hashable], text_at: Callable[[int], str]) -> Bags:
        cached = self._bags
        missing = {key: i for i, key in enumerate(keys) if key not in cached}
        if missing:
            self._add([(key, text_at(i)) for key, i in missing.items()])
        bags = [cached[key] for key in keys]
        if not bags:
            return Bags(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0))
        terms, counts, lengths = zip(*bags)
        return Bags(
            np.concatenate(terms),
            np.concatenate(counts),
            np.fromiter(map(len, terms), dtype=np.int64, count=len(bags)),
            np.fromiter(lengths, dtype=np.float64, count=len(bags)),
        )

    def _add(self, items: Sequence[tuple[Hashable, str]]) -> None:
        """Tokenize all texts, number every token in one pass, and count each text's terms in
        order of first occurrence (what rank_bm25's per-document Counter holds) with array ops."""
        keys, texts = zip(*items) if items else ((), ())
        splits = list(map(self.tokenize, texts))
        lengths = np.fromiter(map(len, splits), dtype=np.int64, count=len(splits))
        stream = np.fromiter(map(self.vocab.__getitem__, chain.from_iterable(splits)), dtype=np.int64,
                             count=int(lengths.sum()))
        terms, counts, entries = count_in_order(stream, lengths, len(self.terms))
        terms, counts = terms.astype(np.int32), counts.astype(np.int32)
        ends = np.cumsum(entries)
        for key, start, end, length in zip(keys, (ends - entries).tolist(), ends.tolist(), lengths.tolist()):
            self._bags[key] = (terms[start:end], counts[start:end], length)
        self.tokenized += len(keys)

    def lookup(self, tokens: Sequence[str]) -> np.ndarray:
        """Term ids of query tokens, -1 for a term no cached text contains (order kept)."""
        return np.fromiter(map(self.vocab.get, tokens, repeat(-1)), dtype=np.int64, count=len(tokens))

    def export(self) -> tuple[list[str], dict[bytes, tuple[np.ndarray, int]]]:
        """(vocabulary, content hash -> (packed bag, token count)): what a store persists."""
        return list(self.terms), {
            _hash_of_key(key): (terms.astype(np.int64) << _TF_BITS | counts, length)
            for key, (terms, counts, length) in self._bags.items()
        }

    def load(self, terms: Sequence[str], bags: dict[bytes, tuple[np.ndarray, int]]) -> None:
        """Adopt an exported vocabulary and bags (into an empty cache of the same tokenizer)."""
        if self.vocab or self._bags:
            raise InputError(f"load needs an empty token cache; this one holds {len(self._bags)} texts")
        self.vocab = _Vocabulary(list(terms))
        self.add_packed(bags)

    def extend_terms(self, terms: Sequence[str]) -> None:
        """Append terms that a stored vocabulary numbered after this cache's last term."""
        if self.vocab and not self.vocab.keys().isdisjoint(terms):
            raise InputError(f"extend_terms: some of the {len(terms)} terms are in the vocabulary already")
        start = len(self.terms)
        self.vocab.update(zip(terms, range(start, start + len(terms))))
        self.terms.extend(terms)
        if len(self.vocab) != len(self.terms):
            raise InputError(f"extend_terms: {len(self.terms) - len(self.vocab)} of the {len(terms)} terms "
                             "are listed twice")

    def add_packed(self, bags: dict[bytes, tuple[np.ndarray, int]]) -> None:
        """Add bags in `export`'s packed form, over this cache's vocabulary (keys: content hashes)."""
        for key, (packed, length) in bags.items():
            packed = np.asarray(packed, dtype=np.int64)
            if len(packed) and int((packed >> _TF_BITS).max()) >= len(self.terms):
                raise InputError(f"bag {key.hex()[:12]} names a term id beyond the vocabulary ({len(self.terms)})")
            self._bags[key] = (
                (packed >> _TF_BITS).astype(np.int32), (packed & ((1 << _TF_BITS) - 1)).astype(np.int32), int(length)
            )

    def packed(self, keys: Iterable[Hashable]) -> dict[Hashable, tuple[np.ndarray, int]]:
        """key -> (packed bag, token count) of cached texts, as `export` writes them."""
        return {
            key: (terms.astype(np.int64) << _TF_BITS | counts, length)
            for key in keys
            for terms, counts, length in (self._bags[key],)
        }

    def renumber(self, first: int, terms: Sequence[str], new_ids: np.ndarray, keys: Iterable[Hashable]) -> None:
        """Take a stored vocabulary's numbering from term id `first` on: `terms` is its list from
        `first`, `new_ids[i]` the id it gave this cache's term `first + i`; the bags of `keys`
        (the only ones naming ids >= first) are renumbered."""
        if len(new_ids) != len(self.terms) - first:
            raise InputError(f"renumber: {len(new_ids)} new ids for {len(self.terms) - first} terms")
        ids = np.concatenate([np.arange(first, dtype=np.int32), np.asarray(new_ids, dtype=np.int32)])
        self.vocab = _Vocabulary(self.terms[:first] + list(terms))
        for key in keys:
            term_ids, counts, length = self._bags[key]
            self._bags[key] = (ids[term_ids], counts, length)
