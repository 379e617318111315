"""Learned feature weights of the collaborative retriever, saved as JSON beside their provenance
(written by `personarag.training.llm_feedback`, read by `CollaborativeRetriever(scorer=PATH)`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from personarag.errors import InputError

FEATURES = ("relevance", "preference", "user_similarity", "own")


def save_scorer(path: str | Path, weights: Sequence[float], info: dict[str, Any] | None = None) -> Path:
    """Write learned feature weights as JSON (with whatever provenance `info` carries)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": "personarag-collaborative-scorer", "features": list(FEATURES),
               "weights": [float(w) for w in weights], **(info or {})}
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path


def load_scorer(path: str | Path) -> np.ndarray:
    path = Path(path)
    if path.is_dir():
        path = path / "scorer.json"
    if not path.is_file():
        raise InputError(f"no collaborative scorer at {path} (written by personarag.training.llm_feedback)")
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != "personarag-collaborative-scorer" or list(data.get("features", [])) != list(FEATURES):
        raise InputError(f"{path}: not a collaborative scorer over features {FEATURES}")
    return np.asarray(data["weights"], dtype=np.float64)
