"""Checks on a pipeline that need no model and no data, run before any loading or retrieval."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from personarag.component import Component
from personarag.errors import InputError

# parameters that name model weights; a value that looks like a local path must exist
_MODEL_PARAMS = frozenset({"model", "llm", "model_path", "model_name_or_path", "adapter", "encoder"})
_LOCAL_BACKENDS = re.compile(r"^(transformers|vllm|dense|cross-encoder|ce):", re.IGNORECASE)


def check_pipeline(pipeline: Any) -> None:
    """rerank_depth is a positive integer (or None), every local model path exists, and every
    stage passes its own `validate()` (LLMs that cannot answer, unusable cache folders)."""
    depth = getattr(pipeline, "rerank_depth", None)
    if depth is not None and (not isinstance(depth, int) or isinstance(depth, bool) or depth < 1):
        raise InputError(f"rerank_depth must be a positive integer (or unset: rerank all k), got {depth!r}")
    for position, stage in enumerate(pipeline.stages):
        _check_component(stage, f"stage {position} ({stage.spec_name or type(stage).__name__})")
    if hasattr(pipeline, "validate"):
        pipeline.validate()


def _check_component(component: Component, where: str) -> None:
    for name, value in component.params.items():
        _check_value(name, value, f"{where}, {name}")


def _check_value(name: str, value: Any, where: str) -> None:
    if isinstance(value, Component):
        _check_component(value, f"{where} ({value.spec_name or type(value).__name__})")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_value(str(key), item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_value(name, item, where)
    elif isinstance(value, str) and name in _MODEL_PARAMS:
        path = local_path(value)
        if path is not None and not path.exists():
            raise InputError(f"{where}: model path {path} does not exist (checked before loading any data)")


def local_path(spec: str) -> Path | None:
    """The local path a model spec names, or None for a hub name / server model."""
    text = _LOCAL_BACKENDS.sub("", spec.strip())
    if text.startswith(("openai:", "scripted")):
        return None
    text = text.split("+", 1)[0] if "+" in text and not Path(text).exists() else text
    if text.startswith(("/", "./", "../", "~")) or re.match(r"^[A-Za-z]:[\\/]", text):
        return Path(text).expanduser()
    return None
