"""The contrastive user encoder: starts as mean pooling, learns its objective, saves and loads,
is seeded; profile embeddings and their recency weighting."""

from __future__ import annotations

import json

import numpy as np
import pytest

from personarag import Document, InputError, User
from personarag.training.user_encoder import UserEncoderTrainConfig, augment, info_nce, train_user_encoder
from personarag.personal.user_embeddings import parse_date, profile_embedding, recency_weights
from personarag.personal.user_encoder import build_module, load_user_encoder, newest_first, pad_batch

torch = pytest.importorskip("torch")
DIM = 32


POPULAR = np.random.default_rng(99).normal(size=(5, DIM))


def synthetic_users(n_users: int = 50, seed: int = 0, popular: int = 8) -> tuple[list[User], list[np.ndarray]]:
    """Users whose own items scatter around a personal taste vector, mixed with `popular`
    items drawn from five shared ones that say nothing about the user (they swamp the mean)."""
    rng = np.random.default_rng(seed)
    users, embeddings = [], []
    for u in range(n_users):
        taste = rng.normal(size=DIM)
        own = taste + 0.7 * rng.normal(size=(int(rng.integers(4, 7)), DIM))
        items = np.concatenate([own, POPULAR[rng.integers(0, 5, size=popular)]])
        items = items[rng.permutation(len(items))]
        history = tuple(Document(f"u{u}-{j}", f"item {j}", meta={"date": f"20{10 + j:02d}-03-01"}) for j in range(len(items)))
        users.append(User(f"u{u}", history))
        embeddings.append((items / np.linalg.norm(items, axis=1, keepdims=True)).astype(np.float32))
    return users, embeddings


def config(tmp_path, **overrides) -> UserEncoderTrainConfig:
    values = dict(output_dir=str(tmp_path / "enc"), item_model="synthetic", heads=2, epochs=10, batch_size=25,
                  learning_rate=3e-3, max_items=16, dropout=0.0, seed=0, threads=1)
    values.update(overrides)
    return UserEncoderTrainConfig(**values)


def heldout_loss_and_accuracy(embed, sequences, seed: int = 7) -> tuple[float, float]:
    """InfoNCE and top-1 accuracy of matching each user's two disjoint halves."""
    first = embed([s[0::2] for s in sequences])
    second = embed([s[1::2] for s in sequences])
    loss = float(info_nce(torch.from_numpy(first), torch.from_numpy(second), 0.1))
    accuracy = float(np.mean(np.argmax(first @ second.T, axis=1) == np.arange(len(sequences))))
    return loss, accuracy


def test_untrained_encoder_is_mean_pooling():
    torch.manual_seed(0)
    module = build_module(DIM, heads=2, max_items=16).eval()
    users, embeddings = synthetic_users(5)
    sequences = [newest_first(e, u.history) for u, e in zip(users, embeddings)]
    items, pad = pad_batch(sequences, 16)
    with torch.no_grad():
        out = module(torch.from_numpy(items), torch.from_numpy(pad)).numpy()
    expected = np.stack([profile_embedding(e, u.history) for u, e in zip(users, embeddings)])
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_training_lowers_heldout_infonce_saves_loads_and_is_seeded(tmp_path):
    users, embeddings = synthetic_users()
    path = train_user_encoder(users, config(tmp_path), item_embeddings=embeddings)
    saved = json.loads((path / "config.json").read_text())
    assert saved["architecture"]["dim"] == DIM and saved["item_model"] == "synthetic"
    assert saved["versions"]["torch"] and saved["users"] == len(users)
    assert saved["losses"][-1] < saved["losses"][0]

    trained = load_user_encoder(path)
    untrained = build_module(DIM, heads=2, max_items=16).eval()

    def embed_untrained(seqs):
        items, pad = pad_batch(seqs, 16)
        with torch.no_grad():
            return untrained(torch.from_numpy(items), torch.from_numpy(pad)).numpy()

    other_users, other_embeddings = synthetic_users(30, seed=1)  # users it never saw
    sequences = [newest_first(e, u.history) for u, e in zip(other_users, other_embeddings)]
    before = heldout_loss_and_accuracy(embed_untrained, sequences)
    after = heldout_loss_and_accuracy(trained.embed, sequences)
    # it learned to look past the shared popular items: a user's two disjoint halves match better
    assert after[0] < before[0] - 0.5
    assert after[1] >= before[1] + 0.1

    short = [load_user_encoder(train_user_encoder(users, config(tmp_path, output_dir=str(tmp_path / name), epochs=2),
                                                  item_embeddings=embeddings)) for name in ("one", "two")]
    np.testing.assert_array_equal(short[0].embed(sequences), short[1].embed(sequences))  # seeded
    assert not np.allclose(short[0].embed(sequences), trained.embed(sequences))
    np.testing.assert_allclose(np.linalg.norm(trained.embed(sequences), axis=1), 1.0, atol=1e-5)


def test_augmentations_keep_items_and_respect_fractions(tmp_path):
    cfg = config(tmp_path, crop=0.5, mask=0.5, reorder=0.5)
    sequence = np.arange(10, dtype=np.float32)[:, None].repeat(3, axis=1)
    rng = np.random.default_rng(0)
    kinds = set()
    for _ in range(60):
        view, masked = augment(sequence, rng, cfg)
        if len(view) < 10:
            kinds.add("crop")
            assert len(view) == 5 and np.all(np.diff(view[:, 0]) == 1)  # contiguous
        elif masked.any():
            kinds.add("mask")
            assert masked.sum() == 5 and np.array_equal(view, sequence)
        elif not np.array_equal(view, sequence):
            kinds.add("reorder")
            assert sorted(view[:, 0]) == list(range(10))
    assert kinds == {"crop", "mask", "reorder"}


def test_training_config_and_data_errors(tmp_path):
    with pytest.raises(InputError, match="augmentations"):
        config(tmp_path, augmentations=("rotate",))
    with pytest.raises(InputError, match="at least 2 users"):
        users, embeddings = synthetic_users(1)
        train_user_encoder(users, config(tmp_path), item_embeddings=embeddings)
    with pytest.raises(InputError, match="no user encoder"):
        load_user_encoder(tmp_path / "missing")


def test_recency_weights_by_rank_and_date():
    history = (
        Document("a", "x", meta={"date": "2010-01-01"}),
        Document("b", "x", meta={"date": "2012-01-01"}),
        Document("c", "x"),
        Document("d", "x", meta={"date": "2011-01-01"}),
    )
    np.testing.assert_allclose(recency_weights(history, 0.0), 1.0)
    np.testing.assert_allclose(recency_weights(history, 1.0, "rank"), np.exp(-np.array([2, 0, 3, 1])))
    by_date = recency_weights(history, 1.0, "date")
    np.testing.assert_allclose(by_date[[1, 3, 0]], np.exp(-np.array([0, 365 / 365.25, 730 / 365.25])), rtol=1e-6)
    assert by_date[2] == by_date[0]  # undated: the oldest dated item's weight
    assert parse_date("2018-06") == parse_date("2018-06-01")  # unreadable dates: tests/test_history.py
    items = np.eye(4, dtype=np.float32)
    weighted = profile_embedding(items, history, decay=5.0)
    assert np.argmax(weighted) == 1  # the newest item dominates
