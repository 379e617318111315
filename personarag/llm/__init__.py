"""One LLM interface over transformers, vLLM and OpenAI-compatible servers.

`load_llm("transformers:PATH_OR_HUB_NAME")`, `load_llm("vllm:MODEL")`,
`load_llm("openai:MODEL")`; a spec without a backend prefix is a transformers model.
Backends import their heavy libraries only when built.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from personarag.errors import InputError, UnknownSpecError
from personarag.llm.base import (
    LLM,
    AnswerScores,
    Chat,
    Completion,
    GenerationConfig,
    Message,
    PartialBatchError,
    as_chat,
)

BACKENDS = ("transformers", "vllm", "openai", "scripted")
_BACKEND_PREFIX = re.compile(r"^([A-Za-z][A-Za-z0-9_.-]+):(.*)$", re.DOTALL)


def load_llm(spec: str | LLM | Mapping[str, Any], **options: Any) -> LLM:
    """Build an LLM from `BACKEND:MODEL`, a bare model (transformers), a config dict, or pass one through.

    `options` go to the backend's constructor (e.g. `dtype`, `threads`, `cache_dir`).
    An unknown `BACKEND:` prefix raises UnknownSpecError listing the valid backends;
    a Windows drive letter (`C:\\models\\x`) is a path, not a backend; a bare backend name
    (`scripted`, `openai`) is that backend, not a hub model of that name.
    """
    from personarag import registry

    if isinstance(spec, LLM):
        if options:
            raise InputError(f"options {sorted(options)} cannot be applied to an already built {type(spec).__name__}")
        return spec
    if isinstance(spec, Mapping):
        if options:
            raise InputError("options cannot be combined with a config dict; put them in its 'params'")
        return registry.build_from_config(spec, role="llm")  # type: ignore[return-value]
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"an LLM spec must be a non-empty string like 'transformers:PATH', got {spec!r}")
    spec = spec.strip()
    match = _BACKEND_PREFIX.match(spec)
    if match is None and spec in BACKENDS and not Path(spec).exists():
        backend, model = spec, ""  # "pointwise:scripted" means the scripted LLM, not a hub model named "scripted"
    elif match is None:
        backend, model = "transformers", spec
    else:
        backend, model = match.group(1), match.group(2)
        if backend not in BACKENDS:
            raise UnknownSpecError(f"unknown LLM backend {backend!r} in {spec!r}; valid backends: {', '.join(BACKENDS)}")
    if backend == "scripted":
        if model:
            options.setdefault("name", model)
        return registry.build("scripted", role="llm", **options)  # type: ignore[return-value]
    if not model:
        raise InputError(f"LLM spec {spec!r} names no model; expected '{backend}:MODEL'")
    return registry.build(backend, role="llm", model=model, **options)  # type: ignore[return-value]


__all__ = [
    "BACKENDS",
    "LLM",
    "AnswerScores",
    "Chat",
    "Completion",
    "GenerationConfig",
    "Message",
    "PartialBatchError",
    "as_chat",
    "load_llm",
]
