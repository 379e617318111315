"""User histories indexed once, restricted per user: the shared machinery of the history
and collaborative retrievers.

`ProfileStore` keeps every distinct history it has seen exactly once, as a contiguous
block of rows (keyed by user id and history ids, so two users that share an id but not a
history never mix). `ProfileBM25` holds one global term-frequency matrix over those rows and
computes BM25 with statistics (idf, avgdl) over one user's rows only -- the statistics of
the LaMP / CFRAG reference code, which builds a `rank_bm25.BM25Okapi` over each profile for
every query -- without rebuilding anything per query. `ItemEmbeddings` encodes each history
item once.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from personarag.errors import InputError
from personarag.types import Document, User

logger = logging.getLogger(__name__)

UserKey = tuple[str, tuple[str, ...]]
_WORD = re.compile(r"\w+", re.UNICODE)

TOKENIZERS = ("split", "words")


def user_key(user: User) -> UserKey:
    return (user.id, tuple(d.id for d in user.history))


def make_tokenizer(name: str, stemmer: str | None = None) -> Callable[[str], list[str]]:
    """`split`: `str.split()`, what the LaMP reference code feeds rank_bm25 (case kept);
    `words`: lowercased `\\w+` tokens. `stemmer` (a PyStemmer language, e.g. "english")
    stems the tokens of either."""
    if name == "split":
        base: Callable[[str], list[str]] = str.split
    elif name == "words":
        def base(text: str) -> list[str]:
            return _WORD.findall(text.lower())
    else:
        raise InputError(f"unknown tokenizer {name!r}; valid: {', '.join(TOKENIZERS)}")
    if stemmer is None:
        return base
    from personarag.retrievers.tokenization import make_stemmer  # PyStemmer is a core dependency

    stem = make_stemmer(stemmer).stemWords

    def stemmed(text: str) -> list[str]:
        return stem(base(text))

    return stemmed


class ProfileStore:
    """Every distinct history seen, stored once; `rows(user)` is that history's block of rows."""

    def __init__(self) -> None:
        self.items: list[Document] = []
        self.owners: list[str] = []  # user id of each row
        self.starts: list[int] = [0]  # block b holds rows starts[b]:starts[b + 1]
        self._blocks: dict[UserKey, int] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, user: User) -> bool:
        return user_key(user) in self._blocks

    @property
    def n_blocks(self) -> int:
        return len(self.starts) - 1

    def add(self, users: Iterable[User]) -> int:
        """Store the histories not stored yet; returns how many rows were added."""
        before = len(self.items)
        for user in users:
            key = user_key(user)
            if key in self._blocks:
                continue
            self.items.extend(user.history)
            self.owners.extend([user.id] * len(user.history))
            self._blocks[key] = len(self.starts) - 1
            self.starts.append(len(self.items))
        return len(self.items) - before

    def block(self, user: User) -> int:
        """The user's block number, storing the history first if it is new."""
        key = user_key(user)
        if key not in self._blocks:
            self.add([user])
        return self._blocks[key]

    def rows(self, user: User) -> slice:
        block = self.block(user)
        return slice(self.starts[block], self.starts[block + 1])


class ProfileBM25:
    """BM25Okapi (rank_bm25's formula: idf floored at epsilon * mean idf) per user history.

    Postings (user block, term, row, weight) over all stored rows are built once, vectorised,
    as histories arrive; each user's statistics (df, idf, avgdl) come from their own rows
    only. Scores equal `rank_bm25.BM25Okapi(tokenized history, k1, b, epsilon)
    .get_scores(tokenized query)` bit for bit: the same float operations in the same order
    (idf from `math.log`, the idf mean summed sequentially in first-occurrence order)."""

    def __init__(self, store: ProfileStore, tokenizer: Callable[[str], list[str]], *,
                 k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25) -> None:
        self.store = store
        self.tokenize = tokenizer
        self.k1, self.b, self.epsilon = float(k1), float(b), float(epsilon)
        self._next_id = itertools.count()
        self.vocab: defaultdict[str, int] = defaultdict(self._next_id.__next__)
        self._blocks_done = 0
        self._log = np.zeros(0)  # _log[i] = math.log(i + 0.5)
        # postings sorted by key = block << 32 | term, then row
        self._key = np.zeros(0, dtype=np.int64)
        self._row = np.zeros(0, dtype=np.int64)  # row within the user's block
        self._weight = np.zeros(0, dtype=np.float64)  # idf * tf*(k1+1)/(tf + k1*norm)
        self._tf = np.zeros(0, dtype=np.float64)  # raw term frequency of each posting
        self._doc_len = np.zeros(0, dtype=np.float64)  # tokens per stored row

    def _logs(self, upto: int) -> np.ndarray:
        if len(self._log) <= upto:
            self._log = np.asarray([math.log(i + 0.5) for i in range(max(upto + 1, 2 * len(self._log)))])
        return self._log

    def sync(self) -> None:
        """Index the stored blocks that are not indexed yet, all at once."""
        store = self.store
        first_block, n_blocks = self._blocks_done, store.n_blocks
        if first_block == n_blocks:
            return
        row0 = store.starts[first_block]
        lengths: list[int] = []

        def tokenize(doc: Document) -> list[str]:
            words = self.tokenize(doc.full_text)
            lengths.append(len(words))
            return words

        # one dict lookup per token; each row's token list is freed once consumed, so no large
        # container lives on for the garbage collector to walk
        words = itertools.chain.from_iterable(map(tokenize, store.items[row0:]))
        terms = np.fromiter(map(self.vocab.__getitem__, words), dtype=np.int64)
        doc_len = np.asarray(lengths, dtype=np.float64)
        starts = np.asarray(store.starts[first_block:], dtype=np.int64) - row0
        block_sizes = np.diff(starts)
        block_of_row = np.repeat(np.arange(len(block_sizes)), block_sizes)
        row_of = np.repeat(np.arange(len(lengths)), lengths)
        block_of = block_of_row[row_of]
        # tokens grouped by (block, term), in stream order within a group
        tok, group = _group_tokens(block_of, terms, len(self.vocab))
        row = row_of[tok]
        new_key = np.ones(len(tok), dtype=bool)
        new_key[1:] = group[1:] != group[:-1]
        new_pair = new_key.copy()
        new_pair[1:] |= row[1:] != row[:-1]
        pair_at = np.flatnonzero(new_pair)  # a posting: one (block, term, row), rows ascending
        tf = np.diff(np.append(pair_at, len(tok))).astype(np.float64)
        pair_tok, p_row = tok[pair_at], row[pair_at]
        p_block, p_term = block_of[pair_tok], terms[pair_tok]
        pair_new_key = new_key[pair_at]
        key_of_pair = np.cumsum(pair_new_key) - 1
        first_tok = pair_tok[pair_new_key]  # first token of each (block, term): its first occurrence
        df = np.diff(np.append(np.flatnonzero(pair_new_key), len(pair_at)))
        key_block = p_block[pair_new_key]
        n_docs = block_sizes[key_block]
        logs = self._logs(int(block_sizes.max(initial=0)))
        idf = logs[n_docs - df] - logs[df]
        # rank_bm25 floors negative idf at epsilon * (idf summed in first-occurrence order) / n:
        # list the keys in stream order of their first token (blocks are contiguous in the stream)
        first = np.zeros(len(tok), dtype=bool)
        first[first_tok] = True
        key_of_token = np.empty(len(tok), dtype=np.int64)
        key_of_token[first_tok] = np.arange(len(first_tok))
        in_order = key_of_token[first]
        n_keys = np.bincount(key_block, minlength=len(block_sizes))
        eps = self.epsilon * (sequential_sums(idf[in_order], n_keys) / np.maximum(n_keys, 1))
        negative = idf < 0
        idf[negative] = eps[key_block[negative]]
        # tf part with each user's own average document length
        sums = np.bincount(block_of_row, weights=doc_len, minlength=len(block_sizes))
        avgdl = sums / np.maximum(block_sizes, 1)
        dl = doc_len[p_row]
        adl = avgdl[p_block]
        weight = idf[key_of_pair] * (tf * (self.k1 + 1) / (tf + self.k1 * (1 - self.b + self.b * dl / adl)))
        self._key = np.concatenate([self._key, (p_block + first_block) << 32 | p_term])
        self._row = np.concatenate([self._row, p_row - starts[p_block]])
        self._weight = np.concatenate([self._weight, weight])
        self._tf = np.concatenate([self._tf, tf])
        self._doc_len = np.concatenate([self._doc_len, doc_len])
        self._blocks_done = n_blocks

    def scores(self, user: User, query_text: str) -> np.ndarray:
        """BM25 score of each of the user's history items (in history order) for the query."""
        return self.scores_many([user], [query_text])[0]

    def scores_many(self, users: Sequence[User], query_texts: Sequence[str]) -> list[np.ndarray]:
        """`scores` for a batch of (user, query) pairs, vectorised over the whole batch."""
        blocks = np.asarray([self.store.block(u) for u in users], dtype=np.int64)
        self.sync()
        sizes = np.asarray([len(u.history) for u in users], dtype=np.int64)
        tokens = [self.tokenize(text) for text in query_texts]
        lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
        flat = list(itertools.chain.from_iterable(tokens))
        terms = np.fromiter(map(self.vocab.get, flat, itertools.repeat(-1)), dtype=np.int64, count=len(flat))
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
        blocks = np.asarray([self.store.block(u) for u in users], dtype=np.int64)
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


def _group_tokens(
    block: np.ndarray, term: np.ndarray, n_terms: int, *, pack: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Token positions sorted by (block, term, position), and a non-decreasing id of each
    one's (block, term). Blocks are contiguous runs of the token stream, so (block, term,
    offset in block) packs into one unique int64 when the bits allow, and a plain (SIMD) sort
    of that replaces a slower stable argsort."""
    n = len(term)
    if not n:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    block_start = np.searchsorted(block, np.arange(int(block[-1]) + 1))
    offset = np.arange(n) - block_start[block]
    off_bits = int(offset.max()).bit_length()
    term_bits = max(n_terms - 1, 0).bit_length()
    if pack and int(block[-1]).bit_length() + term_bits + off_bits <= 63:
        packed = np.sort((block << term_bits | term) << off_bits | offset)
        tok = block_start[packed >> (term_bits + off_bits)] + (packed & ((1 << off_bits) - 1))
        return tok, packed >> off_bits
    key = block << 32 | term
    tok = np.argsort(key, kind="stable")
    return tok, key[tok]


def sequential_sums(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Sum of each run of `counts[i]` consecutive values, added left to right as Python's
    `sum` / `functools.reduce(operator.add)` do (`np.sum` and `np.add.reduceat` add pairwise,
    which rounds differently). Runs of similar length go through one `np.cumsum` along the
    columns of a zero-padded grid: an accumulation is strictly sequential, and trailing zeros
    leave a sum unchanged."""
    counts = np.asarray(counts, dtype=np.int64)
    out = np.zeros(len(counts))
    starts = np.cumsum(counts) - counts
    size_class = np.frexp(np.maximum(counts, 1).astype(np.float64))[1]  # runs within 2x of each other
    for cls in np.unique(size_class[counts > 0]):
        runs = np.flatnonzero((size_class == cls) & (counts > 0))
        width = int(counts[runs].max())
        step = np.arange(width)[:, None]
        grid = np.where(step < counts[runs], values[np.minimum(starts[runs] + step, len(values) - 1)], 0.0)
        out[runs] = np.cumsum(grid, axis=0)[-1]
    return out


class ItemEmbeddings:
    """Unit-normalised embeddings of stored rows, each row encoded once."""

    def __init__(self, store: ProfileStore, encode: Callable[[Sequence[str]], np.ndarray]) -> None:
        self.store = store
        self.encode = encode
        self._blocks: list[np.ndarray] = []
        self._matrix: np.ndarray | None = None
        self._n = 0

    def sync(self) -> None:
        if self._n == len(self.store):
            return
        texts = [d.full_text for d in self.store.items[self._n:]]
        self._blocks.append(normalize(np.asarray(self.encode(texts), dtype=np.float32)))
        self._n = len(self.store)
        self._matrix = None

    @property
    def matrix(self) -> np.ndarray:
        self.sync()
        if self._matrix is None:
            self._matrix = np.concatenate(self._blocks) if self._blocks else np.zeros((0, 0), np.float32)
            self._blocks = [self._matrix]
        return self._matrix

    def of(self, user: User) -> np.ndarray:
        return self.matrix[self.store.rows(user)]


def normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def sort_dates(history: Sequence[Document]) -> list[int]:
    """Indices of `history`, newest `date` (meta) first; undated items last, in history order."""
    dated = [(str(d.meta.get("date")), i) for i, d in enumerate(history) if d.meta.get("date") not in (None, "")]
    dated.sort(key=lambda pair: pair[1])
    dated.sort(key=lambda pair: pair[0], reverse=True)  # stable: equal dates keep history order
    seen = {i for _, i in dated}
    return [i for _, i in dated] + [i for i in range(len(history)) if i not in seen]
