"""Contrastive training of the user encoder (CFRAG, after CL4SRec).

Each user's history (item embeddings from a frozen sentence encoder, newest first) yields two
augmented views per step -- crop (a contiguous part), mask (some items hidden), reorder (a
contiguous part shuffled), one picked at random per view -- and InfoNCE over the users of
the batch pulls a user's two views together and pushes other users' apart (symmetric
cross-entropy over cosine similarities / temperature).

    from personarag.training.user_encoder import UserEncoderTrainConfig, train_user_encoder
    path = train_user_encoder(users, UserEncoderTrainConfig(output_dir="models/users"))
    CollaborativeRetriever(user_encoder=str(path))

The output folder holds `model.safetensors` and `config.json` (architecture, item model,
this config, library versions, the loss per epoch); `load_user_encoder(path)` reads it.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from personarag.errors import InputError, require
from personarag.training import common
from personarag.types import User
from personarag.personal.user_encoder import build_module, newest_first, pad_batch, save_user_encoder

logger = logging.getLogger(__name__)

AUGMENTATIONS = ("crop", "mask", "reorder")


@dataclass
class UserEncoderTrainConfig:
    output_dir: str
    item_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    layers: int = 1
    heads: int = 4
    max_items: int = 128
    dropout: float = 0.1
    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    temperature: float = 0.1
    crop: float = 0.6  # fraction of the history a crop keeps
    mask: float = 0.3  # fraction of items a mask hides
    reorder: float = 0.3  # fraction of the history a reorder shuffles
    augmentations: tuple[str, ...] = AUGMENTATIONS
    seed: int = 0
    threads: int | None = None
    item_batch_size: int = 64

    def __post_init__(self) -> None:
        self.augmentations = tuple(self.augmentations)
        unknown = [a for a in self.augmentations if a not in AUGMENTATIONS]
        if unknown or not self.augmentations:
            raise InputError(f"augmentations must be a non-empty subset of {AUGMENTATIONS}, got {self.augmentations}")
        for name in ("crop", "mask", "reorder"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise InputError(f"{name} must be a fraction in (0, 1], got {value!r}")
        if self.temperature <= 0 or self.batch_size < 2 or self.epochs < 1:
            raise InputError(
                f"need temperature > 0, batch_size >= 2 (InfoNCE contrasts users) and epochs >= 1; "
                f"got {self.temperature}, {self.batch_size}, {self.epochs}"
            )


def augment(sequence: np.ndarray, rng: np.random.Generator, config: UserEncoderTrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """One augmented view: (items, masked flags)."""
    n = len(sequence)
    kind = config.augmentations[rng.integers(len(config.augmentations))]
    masked = np.zeros(n, dtype=bool)
    if n < 2:
        return sequence, masked
    if kind == "crop":
        keep = max(1, int(config.crop * n))
        start = int(rng.integers(n - keep + 1))
        return sequence[start: start + keep], masked[start: start + keep]
    if kind == "mask":
        hide = min(n - 1, int(config.mask * n))
        masked[rng.choice(n, size=hide, replace=False)] = True
        return sequence, masked
    span = max(2, int(config.reorder * n))
    start = int(rng.integers(n - span + 1))
    order = np.arange(n)
    order[start: start + span] = rng.permutation(order[start: start + span])
    return sequence[order], masked


def _view_batch(sequences: Sequence[np.ndarray], rng: np.random.Generator, config: UserEncoderTrainConfig) -> tuple[Any, Any, Any]:
    torch = require("torch", "train")
    views = [augment(s, rng, config) for s in sequences]
    items, pad = pad_batch([v[0] for v in views], config.max_items)
    masked = np.zeros_like(pad)
    for row, (_, flags) in enumerate(views):
        flags = flags[: pad.shape[1]]
        masked[row, : len(flags)] = flags
    return torch.from_numpy(items), torch.from_numpy(pad), torch.from_numpy(masked)


def info_nce(a: Any, b: Any, temperature: float) -> Any:
    """Symmetric InfoNCE: row i of `a` should match row i of `b` among all rows (unit vectors)."""
    torch = require("torch", "train")
    logits = a @ b.T / temperature
    target = torch.arange(len(a))
    cross_entropy = torch.nn.functional.cross_entropy
    return (cross_entropy(logits, target) + cross_entropy(logits.T, target)) / 2


def encode_histories(users: Sequence[User], model: str, batch_size: int = 64, device: str | None = None) -> list[np.ndarray]:
    """Item embeddings of each user's history with a sentence-transformers model."""
    from personarag.retrievers.encoders import load_sentence_encoder

    encoder = load_sentence_encoder(model, device)
    texts = [d.full_text for u in users for d in u.history]
    matrix = encoder.encode(texts, batch_size=batch_size, task="document")
    bounds = np.cumsum([0] + [len(u.history) for u in users])
    return [matrix[bounds[i]: bounds[i + 1]] for i in range(len(users))]


def train_user_encoder(
    users: Sequence[User],
    config: UserEncoderTrainConfig,
    *,
    item_embeddings: Sequence[np.ndarray] | None = None,
) -> Path:
    """Train on `users` (empty histories are skipped) and save to `config.output_dir`.

    `item_embeddings`: one (len(history), dim) array per user, in history order, when the
    caller has them already; otherwise they are computed with `config.item_model`."""
    torch = require("torch", "train", purpose="training the user encoder")
    from tqdm.auto import tqdm

    common.set_threads(config.threads)
    common.set_seed(config.seed)
    if item_embeddings is None:
        item_embeddings = encode_histories(users, config.item_model, config.item_batch_size)
    if len(item_embeddings) != len(users):
        raise InputError(f"item_embeddings: one array per user ({len(users)}), got {len(item_embeddings)}")
    sequences = []
    for user, items in zip(users, item_embeddings):
        items = np.asarray(items, dtype=np.float32)
        if len(items) != len(user.history):
            raise InputError(f"user {user.id!r}: {len(user.history)} history items but {len(items)} embeddings")
        if len(items):
            sequences.append(newest_first(items, user.history))
    if len(sequences) < 2:
        raise InputError(f"contrastive training needs at least 2 users with a history, got {len(sequences)}")
    dim = sequences[0].shape[1]
    module = build_module(dim, config.layers, config.heads, config.max_items, config.dropout)
    optimizer = torch.optim.AdamW(module.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    rng = np.random.default_rng(config.seed)
    batch_size = min(config.batch_size, len(sequences))
    steps = (len(sequences) + batch_size - 1) // batch_size
    losses: list[float] = []
    module.train()
    bar = tqdm(total=config.epochs * steps, desc="user encoder", disable=not sys.stderr.isatty())
    for epoch in range(config.epochs):
        order = rng.permutation(len(sequences))
        total = 0.0
        for step in range(steps):
            batch = [sequences[i] for i in order[step * batch_size: (step + 1) * batch_size]]
            if len(batch) < 2:  # a lone user has no negatives
                continue
            first, second = _view_batch(batch, rng, config), _view_batch(batch, rng, config)
            loss = info_nce(module(*first), module(*second), config.temperature)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{float(loss.detach()):.4f}")
        losses.append(total / len(sequences))
        logger.info("user encoder epoch %d: InfoNCE %.4f", epoch, losses[-1])
    bar.close()
    saved = save_user_encoder(
        module,
        config.output_dir,
        {
            "architecture": {"dim": dim, "layers": config.layers, "heads": config.heads,
                             "max_items": config.max_items, "dropout": config.dropout},
            "item_model": config.item_model,
            "training": dataclasses.asdict(config),
            "users": len(sequences),
            "losses": losses,
            "versions": common.library_versions(),
        },
    )
    logger.info("user encoder saved to %s", saved)
    return saved
