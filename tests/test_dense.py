"""Dense retrieval: the encoder and FAISS helpers, DenseRetriever's cache, save/load and a real-model check."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from personarag import Document, InputError, Query, registry
from personarag.retrievers.encoders import load_sentence_encoder, model_fingerprint
from personarag.retrievers.faiss_index import VectorIndex, auto_nlist, build_index


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_encoder(tiny_bi_encoder_path):
    return load_sentence_encoder(tiny_bi_encoder_path, device="cpu")


def random_unit(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# --- encoders --------------------------------------------------------------------------


def test_encoder_returns_normalised_float32_and_counts_texts(tiny_encoder):
    before = tiny_encoder.texts_encoded
    out = tiny_encoder.encode(["a cat", "a dog", "the sun"], batch_size=2)
    assert out.dtype == np.float32 and out.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    assert tiny_encoder.texts_encoded == before + 3
    raw = tiny_encoder.encode(["a cat"], normalize=False)
    np.testing.assert_allclose(raw[0] / np.linalg.norm(raw[0]), out[0], rtol=1e-4, atol=1e-5)


def test_encoder_prompt_changes_embedding_and_batching_does_not(tiny_encoder):
    plain = tiny_encoder.encode(["what is a cat"], prompt=None)
    prompted = tiny_encoder.encode(["what is a cat"], prompt="query: ")
    same = tiny_encoder.encode(["query: what is a cat"])
    assert not np.allclose(plain, prompted)
    np.testing.assert_allclose(prompted, same, atol=1e-5)
    texts = [f"text number {i} " * (i % 4 + 1) for i in range(7)]
    np.testing.assert_allclose(tiny_encoder.encode(texts, batch_size=1), tiny_encoder.encode(texts, batch_size=7), atol=1e-5)


def test_encoder_rejects_bad_input(tiny_encoder):
    with pytest.raises(InputError, match="single string"):
        tiny_encoder.encode("one string")
    with pytest.raises(InputError, match=r"texts\[1\]"):
        tiny_encoder.encode(["ok", 3])
    with pytest.raises(InputError, match="batch_size"):
        tiny_encoder.encode(["ok"], batch_size=0)
    with pytest.raises(InputError, match="device"):
        load_sentence_encoder("x", device="gpu")
    assert tiny_encoder.encode([]).shape == (0, 32)


def test_model_fingerprint_follows_content_not_location(tiny_bi_encoder_path, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_bi_encoder_path, copy)
    assert model_fingerprint(copy) == model_fingerprint(tiny_bi_encoder_path)
    (copy / "config.json").write_text((copy / "config.json").read_text().replace("{", '{"x": 1,', 1))
    assert model_fingerprint(copy) != model_fingerprint(tiny_bi_encoder_path)
    assert model_fingerprint("org/name") == "hub:org/name@default"


# --- FAISS -----------------------------------------------------------------------------


def exact_top(vectors, queries, k):
    return np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :k]


def recall(found, exact):
    return np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact)])


def test_flat_index_is_exact_and_scores_are_inner_products():
    vectors, queries = random_unit(500, 16, 0), random_unit(20, 16, 1)
    scores, positions = build_index(vectors).search(queries, 10)
    np.testing.assert_array_equal(positions, exact_top(vectors, queries, 10))
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ vectors.T, positions, 1), rtol=1e-5)
    l2_scores, l2_positions = build_index(vectors, metric="l2").search(queries, 10)
    np.testing.assert_array_equal(l2_positions, positions)  # unit vectors: L2 order == IP order
    assert (l2_scores <= 0).all()


def test_ivf_and_hnsw_recall_against_exact():
    vectors, queries = random_unit(4000, 32, 2), random_unit(50, 32, 3)
    exact = exact_top(vectors, queries, 10)
    ivf_low = build_index(vectors, "ivf", nlist=64, nprobe=1)
    ivf_high = build_index(vectors, "ivf", nlist=64, nprobe=64)
    hnsw = build_index(vectors, "hnsw", hnsw_m=16, ef_search=128)
    r_low = recall(ivf_low.search(queries, 10)[1], exact)
    r_high = recall(ivf_high.search(queries, 10)[1], exact)
    r_hnsw = recall(hnsw.search(queries, 10)[1], exact)
    assert r_high == 1.0  # probing every list is exhaustive
    assert r_low < 0.8  # one list of 64 misses most neighbours in 32-d random data
    assert r_hnsw >= 0.9
    assert ivf_low.nlist_used == 64


def test_ivf_nlist_from_size_and_too_small_corpus():
    assert auto_nlist(10) == 1 and auto_nlist(5183) == 132 and auto_nlist(1_000_000) == 4000
    vectors = random_unit(30, 8, 4)
    with pytest.raises(InputError, match="nlist=64 needs at least 64 vectors"):
        build_index(vectors, "ivf", nlist=64)
    index = build_index(vectors, "ivf")
    assert index.nlist_used == 1
    assert index.search(vectors[:2], 3)[1][:, 0].tolist() == [0, 1]


def test_index_search_clamps_k_and_checks_input():
    vectors = random_unit(5, 4, 5)
    index = build_index(vectors)
    scores, positions = index.search(vectors[:1], 50)
    assert positions.shape == (1, 5)
    with pytest.raises(InputError, match="dimension 3"):
        index.search(np.zeros((1, 3), np.float32), 1)
    with pytest.raises(InputError, match="NaN"):
        build_index(np.full((2, 4), np.nan))
    with pytest.raises(InputError, match="kind"):
        build_index(vectors, "lsh")
    with pytest.raises(InputError, match="empty"):
        VectorIndex().search(vectors, 1)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_index_save_load_round_trip(tmp_path, kind):
    vectors, queries = random_unit(300, 8, 6), random_unit(5, 8, 7)
    index = build_index(vectors, kind, nprobe=2)
    path = index.save(tmp_path / "vectors.faiss")
    again = VectorIndex.load(path)
    assert again.spec == index.spec and again.ntotal == 300
    for a, b in zip(index.search(queries, 7), again.search(queries, 7)):
        np.testing.assert_array_equal(a, b)
    if kind == "ivf":
        assert VectorIndex.load(path, nprobe=auto_nlist(300)).search(queries, 7)[1].tolist() == exact_top(vectors, queries, 7).tolist()
