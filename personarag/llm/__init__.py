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
    config = llm_config(spec, **options)
    return registry.build(config["spec"], role="llm", **config["params"])  # type: ignore[return-value]


def llm_config(spec: str | Mapping[str, Any], **options: Any) -> dict[str, Any]:
    """The config `{"spec": BACKEND, "params": {...}}` of the LLM a spec names, with `options` added to
    its params (they win over the params a config dict already has).

    It is the form a stage's `llm` takes in a config file (`{"spec": "lamp", "params": {"llm":
    {"spec": "transformers", "params": {"model": PATH, "threads": 1}}}}`); specs are read as by
    `load_llm`, so a bare path or hub name is a transformers model.
    """
    if isinstance(spec, Mapping):
        if "spec" not in spec:
            raise InputError(f"an LLM config needs a 'spec' key, got keys {sorted(spec)}")
        return {"spec": spec["spec"], "params": {**(spec.get("params") or {}), **options}}
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
        return {"spec": backend, "params": {**({"name": model} if model else {}), **options}}
    if not model:
        raise InputError(f"LLM spec {spec!r} names no model; expected '{backend}:MODEL'")
    return {"spec": backend, "params": {"model": model, **options}}


def with_llm_options(stage: Any, options: Mapping[str, Any]) -> Any:
    """`stage` (a spec string or a config dict) as a config in which every LLM it builds from a spec
    (its `llm`, and that of the stages nested in its params) gets `options`, e.g. `{"threads": 1}`;
    `stage` itself, unchanged, when it builds none (a retriever, a cross-encoder, a built object).

    `with_llm_options("lamp:transformers:PATH", {"threads": 1})` is
    `{"spec": "lamp", "params": {"llm": {"spec": "transformers", "params": {"model": "PATH", "threads": 1}}}}`.
    """
    from personarag import registry

    if not options or not isinstance(stage, (str, Mapping)):
        return stage
    if isinstance(stage, str):
        name, arg = registry.split_spec(stage)
        entry = registry.REGISTRY.get(name)
        if arg is None or entry is None or entry.arg != "llm":
            return stage
        return {"spec": name, "params": {"llm": llm_config(arg, **options)}}
    if "spec" not in stage:
        return stage
    spec, params = stage["spec"], dict(stage.get("params") or {})
    name, arg = registry.split_spec(spec)
    entry = registry.REGISTRY.get(name)
    if arg is not None and entry is not None and entry.arg == "llm" and "llm" not in params:
        spec, params["llm"] = name, arg  # "listwise:MODEL" with params: the LLM is the text after the colon
    changed: dict[str, Any] = {}
    for key, value in params.items():
        if key == "llm" and isinstance(value, (str, Mapping)):
            changed[key] = llm_config(value, **options)
        elif isinstance(value, Mapping) and with_llm_options(value, options) is not value:
            changed[key] = with_llm_options(value, options)
        elif isinstance(value, list):
            items = [with_llm_options(v, options) if isinstance(v, Mapping) else v for v in value]
            if any(new is not old for new, old in zip(items, value)):
                changed[key] = items
    return {"spec": spec, "params": {**params, **changed}} if changed else stage


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
    "llm_config",
    "load_llm",
    "with_llm_options",
]
