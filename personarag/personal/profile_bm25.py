"""BM25 over each user's own history, bit-exact with a `rank_bm25.BM25Okapi` built over that
history alone (the LaMP / CFRAG reference code), built once for all users and extended
incrementally as histories arrive or change."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from personarag.errors import InputError
from personarag.personal.bm25_arrays import group_entries, sequential_sums
from personarag.personal.profile_store import ProfileStore, UserKey, same_history, user_key
from personarag.personal.stored_tokens import StoredTokens, history_digest, params_key
from personarag.personal.tokens import TokenCache
from personarag.types import User


Segment = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""One history's postings: (term, row in the history, weight, tf) per posting, sorted by
(term, row), and the length of each item; block-free, so a cache can keep it per user."""


@dataclass(frozen=True)
class _Built:
    """Postings of several blocks numbered 0.. in build order, sorted by (block, term, row)."""

    block: np.ndarray
    term: np.ndarray
    row: np.ndarray
    weight: np.ndarray
    tf: np.ndarray
    doc_len: np.ndarray  # per row
    block_sizes: np.ndarray  # rows per block

    def arrays(self, first_block: int) -> tuple[np.ndarray, ...]:
        """(key, row, weight, tf, doc_len) for blocks numbered from `first_block`."""
        return (self.block + first_block) << 32 | self.term, self.row, self.weight, self.tf, self.doc_len

    def segments(self) -> list[Segment]:
        n = len(self.block_sizes)
        post = np.searchsorted(self.block, np.arange(n + 1)).tolist()
        rows = [0, *np.cumsum(self.block_sizes).tolist()]
        return [
            (self.term[post[i]:post[i + 1]], self.row[post[i]:post[i + 1]], self.weight[post[i]:post[i + 1]],
             self.tf[post[i]:post[i + 1]], self.doc_len[rows[i]:rows[i + 1]])
            for i in range(n)
        ]


class ProfileBM25:
    """BM25Okapi (rank_bm25's formula: idf floored at epsilon * mean idf) per user history.

    Postings (user block, term, row, weight) over all stored rows are built once, vectorised,
    as histories arrive; each user's statistics (df, idf, avgdl) come from their own rows
    only. Scores equal `rank_bm25.BM25Okapi(tokenized history, k1, b, epsilon)
    .get_scores(tokenized query)` bit for bit: the same float operations in the same order
    (idf from `math.log`, the idf mean summed sequentially in first-occurrence order)."""

    def __init__(self, store: ProfileStore, tokenizer: Callable[[str], list[str]], *,
                 k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25,
                 tokens: TokenCache | None = None, stored: StoredTokens | None = None) -> None:
        self.store = store
        if stored is not None:
            if tokens is not None and tokens is not stored.cache:
                raise InputError("give ProfileBM25 either a token cache or a stored one (whose cache it uses), not both")
            tokens = stored.cache
        if tokens is not None and tokens.tokenize is not tokenizer:
            raise InputError(f"the token cache {tokens.name!r} was made for another tokenizer than {tokenizer!r}")
        self.tokens = TokenCache(tokenizer) if tokens is None else tokens
        self.stored = stored  # a user store's bags and postings, read and written through
        self.tokenize = self.tokens.tokenize
        self.k1, self.b, self.epsilon = float(k1), float(b), float(epsilon)
        self._blocks_done = 0
        self._generation = store.generation
        self._log = np.zeros(0)  # _log[i] = math.log(i + 0.5)
        # postings sorted by key = block << 32 | term, then row
        self._key = np.zeros(0, dtype=np.int64)
        self._row = np.zeros(0, dtype=np.int64)  # row within the user's block
        self._weight = np.zeros(0, dtype=np.float64)  # idf * tf*(k1+1)/(tf + k1*norm)
        self._tf = np.zeros(0, dtype=np.float64)  # raw term frequency of each posting
        self._doc_len = np.zeros(0, dtype=np.float64)  # tokens per stored row

    @property
    def vocab(self) -> dict[str, int]:
        return self.tokens.vocab

    def _logs(self, upto: int) -> np.ndarray:
        if len(self._log) <= upto:
            self._log = np.asarray([math.log(i + 0.5) for i in range(max(upto + 1, 2 * len(self._log)))])
        return self._log

    def _follow_compaction(self) -> None:
        """Renumber blocks and rows as the store compacted them; retired blocks' postings go."""
        remap = self.store.remap_since(self._generation)
        if remap is None:
            return
        block_map, kept = remap
        done = self._blocks_done
        block = self._key >> 32
        live = block_map[block] >= 0
        self._key = block_map[block[live]] << 32 | (self._key[live] & 0xFFFFFFFF)
        self._row, self._weight, self._tf = self._row[live], self._weight[live], self._tf[live]
        self._doc_len = self._doc_len[kept[kept < len(self._doc_len)]]
        # blocks not indexed yet keep their order; the first of them is where indexing resumes
        self._blocks_done = int((block_map[:done] >= 0).sum())
        self._generation = self.store.generation

    def sync(self) -> None:
        """Index the stored blocks that are not indexed yet, all at once; a history whose
        postings the token cache keeps (same content, same k1, b, epsilon) is not rebuilt."""
        self._follow_compaction()
        store = self.store
        first_block, n_blocks = self._blocks_done, store.n_blocks
        if first_block == n_blocks:
            if self.stored is not None and not self.stored.terms_read:  # queries are looked up in it
                self.stored.read_terms()
            return
        params = (self.k1, self.b, self.epsilon)
        kept = self.tokens.postings
        owners = [store.current(block) for block in range(first_block, n_blocks)]
        segments: list[Segment | None] = [None] * len(owners)
        for i, owner in enumerate(owners):
            entry = kept.get(owner[0]) if owner is not None else None
            if entry is not None and entry[1] == params and same_history(entry[0], owner[1]):  # type: ignore[index]
                segments[i] = entry[2]
        todo = [i for i, segment in enumerate(segments) if segment is None]
        digests: dict[str, str] = {}
        if self.stored is not None and todo:
            for i in todo:
                if owners[i] is not None:
                    digests[owners[i][0]] = history_digest(owners[i][1])  # type: ignore[index]
            loaded = self.stored.load_postings(params_key(*params), digests)
            if len(loaded.users) == len(segments):  # every block, in block order: no concatenating
                blocks = np.repeat(np.arange(first_block, n_blocks), loaded.post_sizes)
                self._append((blocks << 32 | loaded.arrays[0], *loaded.arrays[1:]), n_blocks)
                return
            found = loaded.segments()
            for i in todo:
                if owners[i] is not None and owners[i][0] in found:  # type: ignore[index]
                    segments[i] = found[owners[i][0]]  # type: ignore[index]
                    kept[owners[i][0]] = (owners[i][1], params, segments[i])  # type: ignore[index]
            todo = [i for i in todo if segments[i] is None]
        if todo:
            built = self._build([first_block + i for i in todo])
            for i, segment in zip(todo, built.segments()):
                segments[i] = segment
                if owners[i] is not None:
                    kept[owners[i][0]] = (owners[i][1], params, segment)  # type: ignore[index]
            if self.stored is not None:
                self.stored.save_postings(params_key(*params), {
                    owners[i][0]: (digests[owners[i][0]], segments[i])  # type: ignore[index, misc]
                    for i in todo if owners[i] is not None})
        if len(todo) == len(segments):
            new = built.arrays(first_block)
        else:
            parts = list(zip(*segments))  # type: ignore[arg-type]
            sizes = np.fromiter(map(len, parts[0]), dtype=np.int64, count=len(segments))
            blocks = np.repeat(np.arange(first_block, n_blocks), sizes)
            new = (blocks << 32 | np.concatenate(parts[0]), *(np.concatenate(p) for p in parts[1:]))
        self._append(new, n_blocks)

    def _append(self, new: tuple[np.ndarray, ...], n_blocks: int) -> None:
        old = (self._key, self._row, self._weight, self._tf, self._doc_len)
        self._key, self._row, self._weight, self._tf, self._doc_len = (
            b if not len(a) else np.concatenate([a, b]) for a, b in zip(old, new)
        )
        self._blocks_done = n_blocks

    def _build(self, blocks: list[int]) -> _Built:
        """Postings of the given stored blocks (ascending), vectorised over all of them."""
        store = self.store
        if blocks[-1] - blocks[0] == len(blocks) - 1:  # a run of blocks: their rows are one slice
            items = store.items[store.starts[blocks[0]]: store.starts[blocks[-1] + 1]]
        else:
            items = [d for b in blocks for d in store.items[store.starts[b]: store.starts[b + 1]]]
        block_sizes = np.asarray([store.starts[b + 1] - store.starts[b] for b in blocks], dtype=np.int64)
        starts = np.cumsum(block_sizes) - block_sizes
        bags = self.tokens.bags_of(items) if self.stored is None else self.stored.bags_of(items)
        doc_len = bags.lengths
        row_of = np.repeat(np.arange(len(doc_len)), bags.entries)  # row of each bag entry
        block_of_row = np.repeat(np.arange(len(block_sizes)), block_sizes)
        # bag entries grouped by (block, term), rows ascending within a group; an entry is
        # one posting (block, term, row) with its term frequency
        pos, group, term_bits = group_entries(block_of_row[row_of], bags.terms, len(self.tokens.vocab))
        p_block, p_term = group >> term_bits, group & ((1 << term_bits) - 1)
        new_key = np.ones(len(pos), dtype=bool)
        new_key[1:] = group[1:] != group[:-1]
        key_at = np.flatnonzero(new_key)
        df = np.diff(np.append(key_at, len(pos)))
        key_block = p_block[key_at]
        logs = self._logs(int(block_sizes.max(initial=0)))
        idf = logs[block_sizes[key_block] - df] - logs[df]
        # rank_bm25 floors negative idf at epsilon * (idf summed in first-occurrence order) / n:
        # list the keys in stream order of their first entry (blocks are contiguous in the stream)
        first_pos = pos[key_at]
        first = np.zeros(len(pos), dtype=bool)
        first[first_pos] = True
        key_of_entry = np.empty(len(pos), dtype=np.int64)
        key_of_entry[first_pos] = np.arange(len(first_pos))
        n_keys = np.bincount(key_block, minlength=len(block_sizes))
        eps = self.epsilon * (sequential_sums(idf[key_of_entry[first]], n_keys) / np.maximum(n_keys, 1))
        negative = idf < 0
        idf[negative] = eps[key_block[negative]]
        # tf part with each user's own average document length; rank_bm25's denominator
        # tf + k1 * (1 - b + b * dl / avgdl) has a per-row second term, computed per row
        sums = np.bincount(block_of_row, weights=doc_len, minlength=len(block_sizes))
        avgdl = sums / np.maximum(block_sizes, 1)
        row_norm = self.k1 * (1 - self.b + self.b * doc_len / avgdl[block_of_row])
        p_row, tf = row_of[pos], bags.counts[pos].astype(np.float64)
        weight = np.repeat(idf, df) * (tf * (self.k1 + 1) / (tf + row_norm[p_row]))  # a key's postings are adjacent
        return _Built(p_block, p_term, p_row - starts[p_block], weight, tf, doc_len, block_sizes)

    def scores(self, user: User, query_text: str) -> np.ndarray:
        """BM25 score of each of the user's history items (in history order) for the query."""
        return self.scores_many([user], [query_text])[0]

    def scores_many(self, users: Sequence[User], query_texts: Sequence[str]) -> list[np.ndarray]:
        """`scores` for a batch of (user, query) pairs, vectorised over the whole batch."""
        found = self.store.blocks(users)
        if None in found:  # one user id with several histories: one round per history
            return _in_rounds(users, query_texts, self.scores_many)
        blocks = np.asarray(found, dtype=np.int64)
        self.sync()
        sizes = np.asarray([len(u.history) for u in users], dtype=np.int64)
        tokens = [self.tokenize(text) for text in query_texts]
        lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
        terms = self.tokens.lookup(list(itertools.chain.from_iterable(tokens)))
        query_of = np.repeat(np.arange(len(tokens)), lengths)
        known = terms >= 0
        # each distinct key looked up once, in sorted order (binary searches then stay local)
        keys, inverse = np.unique(blocks[query_of[known]] << 32 | terms[known], return_inverse=True)
        lo = np.searchsorted(self._key, keys, "left")[inverse]
        counts = np.searchsorted(self._key, keys, "right")[inverse] - lo
        # every posting of every query token occurrence, in query order: bincount then adds
        # each row's contributions in the order rank_bm25's loop does
        offsets = np.cumsum(counts) - counts
        picks = np.repeat(lo - offsets, counts) + np.arange(int(counts.sum()))
        base = np.cumsum(sizes) - sizes
        slots = np.repeat(base[query_of[known]], counts) + self._row[picks]
        flat_scores = np.bincount(slots, weights=self._weight[picks], minlength=int(sizes.sum()))
        return np.split(flat_scores, np.cumsum(sizes)[:-1])

    def pool_scores(self, users: Sequence[User], query_text: str) -> list[np.ndarray]:
        """BM25 of one query over the union of several users' histories, with statistics
        (df, avgdl) over that union and the always-positive Lucene idf
        log(1 + (N - df + 0.5) / (df + 0.5)), so scores compare across owners.
        One array per user, in history order."""
        found = self.store.blocks(users)
        if None in found:
            twice = sorted({u.id for u, b in zip(users, found) if b is None})
            raise InputError(f"pool BM25 takes one history per user; users {twice} came with several")
        blocks = np.asarray(found, dtype=np.int64)
        self.sync()
        sizes = np.asarray([len(u.history) for u in users], dtype=np.int64)
        base = np.cumsum(sizes) - sizes
        n_docs = int(sizes.sum())
        ids = [self.vocab.get(token) for token in self.tokenize(query_text)]
        terms = np.asarray([i for i in ids if i is not None], dtype=np.int64)
        if not n_docs or not len(terms) or not len(blocks):
            return [np.zeros(n) for n in sizes.tolist()]
        keys = (blocks[:, None] << 32 | terms[None, :]).ravel()  # block-major, then query order
        lo = np.searchsorted(self._key, keys, "left")
        counts = np.searchsorted(self._key, keys, "right") - lo
        df = counts.reshape(len(blocks), len(terms)).sum(axis=0)
        idf = np.log(1 + (n_docs - df + 0.5) / (df + 0.5))
        lengths = np.concatenate([self._doc_len[self.store.starts[b]: self.store.starts[b + 1]] for b in blocks.tolist()])
        avgdl = max(float(lengths.sum()) / n_docs, 1e-9)
        offsets = np.cumsum(counts) - counts
        picks = np.repeat(lo - offsets, counts) + np.arange(int(counts.sum()))
        pair = np.repeat(np.arange(len(keys)), counts)
        slots = base[pair // len(terms)] + self._row[picks]
        tf = self._tf[picks]
        part = tf * (self.k1 + 1) / (tf + self.k1 * (1 - self.b + self.b * lengths[slots] / avgdl))
        flat_scores = np.bincount(slots, weights=idf[pair % len(terms)] * part, minlength=n_docs)
        return np.split(flat_scores, np.cumsum(sizes)[:-1])


def _in_rounds(
    users: Sequence[User], texts: Sequence[str], score: Callable[[Sequence[User], Sequence[str]], list[np.ndarray]]
) -> list[np.ndarray]:
    """`score` over sub-batches holding one history per user id (the k-th distinct history
    of each id in round k), results back in input order."""
    versions: dict[str, dict[UserKey, int]] = {}
    rounds = [versions.setdefault(u.id, {}).setdefault(user_key(u), len(versions[u.id])) for u in users]
    out: list[np.ndarray] = [np.zeros(0)] * len(users)
    for r in range(max(rounds) + 1):
        picked = [i for i, ri in enumerate(rounds) if ri == r]
        for i, scores in zip(picked, score([users[i] for i in picked], [texts[i] for i in picked])):
            out[i] = scores
    return out
