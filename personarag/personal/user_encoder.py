"""A trainable user encoder over frozen item embeddings (CFRAG's contrastive user model).

Input: a user's item embeddings (from any sentence-transformers model) ordered newest first,
plus their recency ranks. A small transformer encoder contextualises them, attention pooling
summarises them, and a zero-initialised projection adds that summary to the plain mean:

    user = normalize(mean(items) + W · attention_pool(transformer(items + rank_embedding)))

so an untrained encoder is exactly mean pooling, and training moves away from it only as
far as the contrastive loss asks; the output stays in the item space (cosines with items
remain meaningful for the collaborative retriever's preference score).

`save_user_encoder` writes `model.safetensors` and `config.json` (architecture, the item
model it expects, training settings, library versions); `load_user_encoder(path)` reads them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from personarag.errors import InputError, require
from personarag.personal.profiles import normalize, sort_dates
from personarag.types import Document

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "personarag-user-encoder"


def _module_class() -> type:
    torch = require("torch", "train", purpose="the user encoder")
    nn = torch.nn

    class UserEncoderModule(nn.Module):
        def __init__(self, dim: int, layers: int = 1, heads: int = 4, max_items: int = 256, dropout: float = 0.1) -> None:
            super().__init__()
            if dim % heads:
                raise InputError(f"the item embedding size {dim} must be divisible by heads={heads}")
            self.dim, self.max_items = dim, max_items
            self.rank_embedding = nn.Embedding(max_items, dim)
            nn.init.normal_(self.rank_embedding.weight, std=0.02)
            self.mask_embedding = nn.Parameter(torch.zeros(dim))  # stands in for masked items
            layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=dropout, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.pool_query = nn.Linear(dim, 1)
            self.project = nn.Linear(dim, dim)
            nn.init.zeros_(self.project.weight)
            nn.init.zeros_(self.project.bias)

        def forward(self, items: Any, pad: Any, masked: Any | None = None) -> Any:
            """items (B, L, dim), pad (B, L) True where padding, masked (B, L) True where masked."""
            visible = ~pad if masked is None else ~pad & ~masked  # masked items are hidden from the mean too
            present = visible.unsqueeze(-1).float()
            mean = (items * present).sum(1) / present.sum(1).clamp(min=1.0)
            x = items
            if masked is not None:
                x = torch.where(masked.unsqueeze(-1), self.mask_embedding.expand_as(x), x)
            ranks = torch.arange(x.shape[1], device=x.device).clamp(max=self.max_items - 1)
            hidden = self.encoder(x + self.rank_embedding(ranks), src_key_padding_mask=pad)
            logits = self.pool_query(hidden).squeeze(-1).masked_fill(pad, float("-inf"))
            pooled = (torch.softmax(logits, dim=1).unsqueeze(-1) * hidden).sum(1)
            return torch.nn.functional.normalize(mean + self.project(pooled), dim=-1)

    return UserEncoderModule


def build_module(dim: int, layers: int = 1, heads: int = 4, max_items: int = 256, dropout: float = 0.1) -> Any:
    return _module_class()(dim, layers, heads, max_items, dropout)


def newest_first(items: np.ndarray, history: Sequence[Document]) -> np.ndarray:
    """Item embeddings reordered newest first (by `meta["date"]`, undated last)."""
    return items[np.asarray(sort_dates(history), dtype=np.int64)] if len(history) else items


def pad_batch(sequences: Sequence[np.ndarray], max_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, L, dim) float32 and (B, L) padding mask, each sequence cut to its first `max_items`."""
    length = max(1, min(max_items, max(len(s) for s in sequences)))
    dim = sequences[0].shape[1]
    out = np.zeros((len(sequences), length, dim), dtype=np.float32)
    pad = np.ones((len(sequences), length), dtype=bool)
    for row, seq in enumerate(sequences):
        seq = seq[:length]
        out[row, : len(seq)] = seq
        pad[row, : len(seq)] = False
    return out, pad


class UserEncoder:
    """A loaded user encoder: `embed(item embedding sequences)` -> unit user embeddings."""

    def __init__(self, module: Any, config: dict[str, Any], path: str | None = None) -> None:
        self.module = module.eval()
        self.config = config
        self.path = path

    @property
    def item_model(self) -> str | None:
        return self.config.get("item_model")

    def embed(self, sequences: Sequence[np.ndarray], batch_size: int = 256) -> np.ndarray:
        """One embedding per user from their item embeddings ordered newest first (non-empty)."""
        torch = require("torch", "train")
        if any(len(s) == 0 for s in sequences):
            raise InputError("a user with an empty history has no embedding; leave such users out")
        out = []
        with torch.no_grad():
            for start in range(0, len(sequences), batch_size):
                items, pad = pad_batch(sequences[start: start + batch_size], self.module.max_items)
                out.append(self.module(torch.from_numpy(items), torch.from_numpy(pad)).numpy())
        return normalize(np.concatenate(out)) if out else np.zeros((0, self.module.dim), np.float32)


def save_user_encoder(module: Any, path: str | Path, config: dict[str, Any]) -> Path:
    safetensors = require("safetensors.torch", "train", purpose="saving the user encoder")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    safetensors.save_file(state, str(path / WEIGHTS_FILE))
    (path / CONFIG_FILE).write_text(json.dumps({"format": FORMAT, **config}, indent=2) + "\n", encoding="utf-8")
    return path


def load_user_encoder(path: str | Path) -> UserEncoder:
    safetensors = require("safetensors.torch", "train", purpose="loading the user encoder")
    path = Path(path)
    config_path = path / CONFIG_FILE
    if not config_path.is_file() or not (path / WEIGHTS_FILE).is_file():
        raise InputError(f"no user encoder at {path}: expected {CONFIG_FILE} and {WEIGHTS_FILE} (written by train_user_encoder)")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("format") != FORMAT:
        raise InputError(f"{config_path}: not a personarag user encoder (format {config.get('format')!r})")
    arch = config["architecture"]
    module = build_module(arch["dim"], arch["layers"], arch["heads"], arch["max_items"], arch.get("dropout", 0.1))
    module.load_state_dict(safetensors.load_file(str(path / WEIGHTS_FILE)))
    return UserEncoder(module, config, str(path))
