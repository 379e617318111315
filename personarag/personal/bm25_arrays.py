"""Array steps of per-profile BM25 that must match rank_bm25 bit for bit: grouping a token
stream by (user block, term) in stream order, counting each text's terms as a Counter
does, and left-to-right sums."""

from __future__ import annotations

import numpy as np


def group_entries(
    block: np.ndarray, term: np.ndarray, n_terms: int, *, pack: bool = True
) -> tuple[np.ndarray, np.ndarray, int]:
    """Token positions sorted by (block, term, position), each one's (block, term) as
    block << term_bits | term (non-decreasing), and term_bits. Blocks are contiguous runs of
    the token stream, so (block, term, offset in block) packs into one unique int64 when the
    bits allow, and a plain (SIMD) sort of that replaces a slower stable argsort."""
    n = len(term)
    if not n:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), 32
    block_start = np.searchsorted(block, np.arange(int(block[-1]) + 1))
    offset = np.arange(n) - block_start[block]
    off_bits = int(offset.max()).bit_length()
    term_bits = max(n_terms - 1, 0).bit_length()
    if pack and int(block[-1]).bit_length() + term_bits + off_bits <= 63:
        packed = np.sort((block << term_bits | term) << off_bits | offset)
        tok = block_start[packed >> (term_bits + off_bits)] + (packed & ((1 << off_bits) - 1))
        return tok, packed >> off_bits, term_bits
    key = block << 32 | term
    tok = np.argsort(key, kind="stable")
    return tok, key[tok], 32


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


def count_in_order(terms: np.ndarray, lengths: np.ndarray, n_terms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bags of words of many texts at once, as `collections.Counter(tokens)` builds each:
    `terms` is the token stream (term ids) of texts of `lengths` tokens, one after another.
    Returns each text's distinct terms in order of first occurrence, their counts, and the
    number of distinct terms per text."""
    terms = np.asarray(terms, dtype=np.int64)
    doc = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    tok, group, term_bits = group_entries(doc, terms, n_terms)
    if not len(tok):
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(len(lengths), np.int64)
    new = np.ones(len(tok), dtype=bool)
    new[1:] = group[1:] != group[:-1]
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, len(tok)))
    first = tok[starts]  # each (text, term)'s first position: positions ascend within a group
    order = np.argsort(first)  # texts are contiguous, so this is text order, then first occurrence
    entries = np.bincount(doc[first], minlength=len(lengths))
    return group[starts][order] & ((1 << term_bits) - 1), counts[order], entries
