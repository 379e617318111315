"""Dense retrieval: the encoder and FAISS helpers, DenseRetriever's cache, save/load and a real-model check."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from personarag import Document, InputError, Query, registry
from personarag.retrievers.dense import DenseRetriever
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


# --- DenseRetriever --------------------------------------------------------------------


DOCS = [
    Document("d1", "Cats are small domesticated carnivorous mammals.", title="Cat"),
    Document("d2", "The stock market fell sharply on Monday after the announcement."),
    Document("d3", "Photosynthesis converts light energy into chemical energy in plants."),
    Document("d4", "A recipe for chocolate cake with butter, sugar and eggs."),
    Document("d5", "The football team won the championship final last night."),
    Document("d6", "Volcanoes erupt when magma rises through the crust."),
]


def test_import_dense_is_light():
    code = (
        "import sys, personarag.retrievers.dense, personarag.retrievers.fusion,"
        " personarag.retrievers.encoders, personarag.retrievers.faiss_index;"
        "print(','.join(m for m in ('torch','faiss','sentence_transformers','transformers') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_dense_scores_are_cosines_of_the_encoder(tiny_bi_encoder_path):
    retriever = DenseRetriever(tiny_bi_encoder_path, device="cpu", batch_size=4)
    retriever.index(DOCS)
    queries = [Query("q1", "cats and mammals"), Query("q2", "volcano magma")]
    rankings = retriever.retrieve(queries, k=4)
    docs_matrix = retriever.encoder.encode([d.full_text for d in DOCS])
    for query, ranking in zip(queries, rankings):
        assert ranking.query == query and len(ranking.docs) == 4
        expected = docs_matrix @ retriever.encoder.encode([query.text])[0]
        order = np.argsort(-expected, kind="stable")[:4]
        assert ranking.ids == [DOCS[i].id for i in order]
        np.testing.assert_allclose([d.score for d in ranking.docs], expected[order], rtol=1e-4, atol=1e-5)
        assert ranking.trace[0].stage == "dense"
    assert len(retriever.retrieve(queries[0], k=100)[0].docs) == len(DOCS)
    assert retriever.embeddings.shape == (6, 32) and retriever.doc_ids == [d.id for d in DOCS]


def test_dense_query_prompt_is_applied(tiny_bi_encoder_path):
    retriever = DenseRetriever(tiny_bi_encoder_path, device="cpu", query_prompt="query: ", document_prompt="passage: ")
    retriever.index(DOCS)
    ranking = retriever.retrieve(Query("q", "cats"), k=1)[0]
    expected = retriever.encoder.encode(["passage: " + DOCS[0].full_text])
    np.testing.assert_allclose(retriever.embeddings[:1], expected, atol=1e-5)
    q = retriever.encoder.encode(["query: cats"])[0]
    assert ranking.docs[0].score == pytest.approx(float(np.max(retriever.embeddings @ q)), abs=1e-5)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_dense_approximate_indexes_match_flat_on_a_small_corpus(tiny_bi_encoder_path, kind):
    docs = [Document(f"d{i}", f"document {i} about topic {i % 7} and item {i * 13 % 11}") for i in range(80)]
    flat = DenseRetriever(tiny_bi_encoder_path, device="cpu")
    approx = DenseRetriever(tiny_bi_encoder_path, device="cpu", index=kind, nprobe=2, ef_search=200)
    flat.index(docs)
    approx.index(docs)
    queries = [Query(f"q{i}", f"topic {i} item {i}") for i in range(5)]
    assert [r.ids for r in approx.retrieve(queries, k=5)] == [r.ids for r in flat.retrieve(queries, k=5)]
    if kind == "ivf":
        assert approx._vectors.nlist_used == 2  # 80 vectors / 39 per centroid


def test_dense_spec_and_config_round_trip(tiny_bi_encoder_path):
    built = registry.build(f"dense:{tiny_bi_encoder_path}", index="hnsw", batch_size=8)
    assert isinstance(built, DenseRetriever) and built.model == str(tiny_bi_encoder_path)
    config = built.config()
    assert config["spec"] == "dense" and config["params"]["index"] == "hnsw"
    assert registry.build_from_config(json.loads(json.dumps(config))).config() == config


def test_dense_input_errors(tiny_bi_encoder_path):
    with pytest.raises(InputError, match="no index"):
        DenseRetriever(tiny_bi_encoder_path).retrieve(Query("q", "x"))
    with pytest.raises(InputError, match="index kind"):
        DenseRetriever(tiny_bi_encoder_path, index="annoy")
    with pytest.raises(InputError, match="batch_size"):
        DenseRetriever(tiny_bi_encoder_path, batch_size=0)


def test_cache_reuses_unchanged_corpus_and_reencodes_a_changed_one(tiny_bi_encoder_path, tmp_path):
    cache = tmp_path / "cache"
    first = DenseRetriever(tiny_bi_encoder_path, device="cpu", index="hnsw", cache_dir=cache)
    first.index(DOCS)
    assert first.cache_hit is False and first.encoder.texts_encoded == len(DOCS)
    (entry,) = cache.iterdir()
    files = {p.name: p.stat().st_mtime_ns for p in entry.iterdir()}
    assert "embeddings.npy" in files and any(name.startswith("index-hnsw") for name in files)

    again = DenseRetriever(tiny_bi_encoder_path, device="cpu", index="hnsw", cache_dir=cache)
    again.index(list(DOCS))
    assert again.cache_hit is True and again._encoder is None  # no encoding, not even a model load
    assert {p.name: p.stat().st_mtime_ns for p in entry.iterdir()} == files
    np.testing.assert_array_equal(again.embeddings, first.embeddings)
    query = Query("q", "chocolate")
    assert again.retrieve(query, k=3)[0].ids == first.retrieve(query, k=3)[0].ids

    edited = DOCS[:-1] + [Document("d6", "Volcanoes erupt when magma rises.")]
    changed = DenseRetriever(tiny_bi_encoder_path, device="cpu", cache_dir=cache)
    changed.index(edited)
    assert changed.cache_hit is False and changed.encoder.texts_encoded == len(DOCS)
    prompted = DenseRetriever(tiny_bi_encoder_path, device="cpu", cache_dir=cache, document_prompt="passage: ")
    prompted.index(DOCS)
    assert prompted.cache_hit is False
    assert len(list(cache.iterdir())) == 3


def test_save_load_round_trip(tiny_bi_encoder_path, tmp_path):
    docs = DOCS + [Document("d7", "Meta travels too.", meta={"year": 2020})]
    retriever = DenseRetriever(tiny_bi_encoder_path, device="cpu", index="ivf", nprobe=1)
    retriever.index(docs)
    saved = retriever.save(tmp_path / "index")
    config = json.loads((saved / "config.json").read_text())
    assert config["params"]["index"] == "ivf" and config["n_docs"] == 7 and config["dim"] == 32
    assert {"faiss-cpu", "sentence-transformers", "numpy"} <= set(config["versions"])
    loaded = DenseRetriever.load(saved, threads=1)
    queries = [Query("q1", "cake recipe"), Query("q2", "market")]
    before, after = retriever.retrieve(queries, k=5), loaded.retrieve(queries, k=5)
    assert [r.ids for r in after] == [r.ids for r in before]
    assert [[d.score for d in r.docs] for r in after] == [[d.score for d in r.docs] for r in before]
    assert dict(loaded._corpus["d7"].meta) == {"year": 2020}
    with pytest.raises(InputError, match="cannot override index"):
        DenseRetriever.load(saved, index="flat")
    (saved / "index.faiss").unlink()
    with pytest.raises(InputError, match="missing index.faiss"):
        DenseRetriever.load(saved)


def test_minilm_ranks_the_paraphrase_first(minilm_path):
    retriever = DenseRetriever(minilm_path, device="cpu")
    retriever.index(DOCS)
    queries = [
        Query("q1", "felines are little pet meat-eating animals"),
        Query("q2", "how plants turn sunlight into food"),
        Query("q3", "shares dropped steeply at the start of the week"),
    ]
    rankings = retriever.retrieve(queries, k=6)
    assert [r.ids[0] for r in rankings] == ["d1", "d3", "d2"]
    assert all(r.docs[0].score > r.docs[1].score + 0.1 for r in rankings)
