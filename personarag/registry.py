"""Spec string -> component, through one explicit table.

A spec is `NAME` or `NAME:ARG` (split at the first colon), e.g. `bm25`,
`dense:sentence-transformers/all-MiniLM-L6-v2`, `rrf:bm25+dense:PATH`,
`pointwise:MODEL`. The table names the module and class lazily, so resolving a spec
imports only what it needs, and `import personarag` stays light.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from personarag.component import Component
from personarag.errors import InputError, UnknownSpecError


@dataclass(frozen=True)
class Entry:
    role: str
    target: str  # "module:Class"
    arg: str | None  # constructor parameter that receives the text after "NAME:"
    help: str

    def load(self) -> type[Component]:
        module_name, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module_name), attr)


# Each module adds its own line here; tests/test_core.py checks every entry resolves.
REGISTRY: dict[str, Entry] = {
    # retrievers
    "bm25": Entry("retriever", "personarag.retrievers.bm25:BM25Retriever", "backend", "BM25: bm25s (default) | rank_bm25 | lucene"),
    "dense": Entry("retriever", "personarag.retrievers.dense:DenseRetriever", "model", "sentence-transformers bi-encoder + FAISS: dense:MODEL_OR_PATH"),
    "rrf": Entry("retriever", "personarag.retrievers.fusion:FusionRetriever", "retrievers", "reciprocal rank fusion: rrf:bm25+dense:MODEL"),
    "wsum": Entry("retriever", "personarag.retrievers.fusion:WeightedFusionRetriever", "retrievers", "weighted sum of normalised scores: wsum:bm25+dense:MODEL"),
    "rewrite": Entry("retriever", "personarag.retrievers.rewrite:QueryRewriteRetriever", "retriever",
                     "an LLM reasons about each query before the inner retriever searches (BRIGHT reasoning queries)"),
    "history": Entry("retriever", "personarag.personal.history:HistoryRetriever", "retriever", "the query user's own history: history:bm25, history:dense:MODEL, history:rrf:bm25+dense:MODEL"),
    "recency": Entry("retriever", "personarag.personal.history:RecencyRetriever", None, "the user's newest history items first"),
    "random": Entry("retriever", "personarag.personal.history:RandomRetriever", None, "the user's history in a seeded random order"),
    "collaborative": Entry("retriever", "personarag.personal.collaborative:CollaborativeRetriever", "model", "CFRAG-style: the user's and similar users' histories, personalized scores (collaborative:MODEL)"),
    # rerankers
    "cross-encoder": Entry("reranker", "personarag.rerankers.cross_encoder:CrossEncoderReranker", "model", "sentence-transformers cross-encoder: cross-encoder:MODEL_OR_PATH"),
    "personal-cross-encoder": Entry("reranker", "personarag.personal.reranker:PersonalCrossEncoderReranker", "model",
                                    "cross-encoder over (user context + query, candidate): personal-cross-encoder:PATH (trained by train llm-feedback)"),
    "pointwise": Entry("reranker", "personarag.rerankers.pointwise:PointwiseReranker", "llm", "LLM pointwise: yes/no, 0..k expected score, or reason-then-score: pointwise:LLM_SPEC"),
    "listwise": Entry("reranker", "personarag.rerankers.listwise:ListwiseReranker", "llm", "LLM sliding-window permutation (RankGPT/RankZephyr, optional reasoning): listwise:LLM_SPEC"),
    "setwise": Entry("reranker", "personarag.rerankers.setwise:SetwiseReranker", "llm", "LLM setwise choice driving heapsort/bubblesort to a top-k: setwise:LLM_SPEC"),
    "groupwise": Entry("reranker", "personarag.rerankers.groupwise:GroupwiseReranker", "llm", "LLM scores a group of documents per prompt: groupwise:LLM_SPEC"),
    # generators
    "lamp": Entry("generator", "personarag.generators.lamp:LaMPGenerator", "llm", "LaMP task prompt over the retrieved profile items: lamp:LLM_SPEC (task=LaMP-1..7)"),
    "majority": Entry("generator", "personarag.generators.floors:MajorityGenerator", "label", "LaMP floor: the split's most frequent profile label (no LLM); majority:LABEL fixes it"),
    "user-majority": Entry("generator", "personarag.generators.floors:UserMajorityGenerator", None, "LaMP floor: the user's most frequent history label (LaMP-2/3; no LLM)"),
    "user-mean": Entry("generator", "personarag.generators.floors:UserMeanGenerator", None, "LaMP floor: the user's mean history rating, rounded (LaMP-3; no LLM)"),
    "knn": Entry("generator", "personarag.generators.floors:KnnGenerator", None, "LaMP floor: rank-weighted vote of the retrieved items' labels; LaMP-4..7: the top item's title (no LLM)"),
    "rag": Entry("generator", "personarag.generators.rag:RAGGenerator", "llm", "question answering from numbered retrieved passages: rag:LLM_SPEC"),
    # LLM backends (what rerankers and generators run on)
    "vllm": Entry("llm", "personarag.llm.vllm_backend:VLLMLLM", "model", "vLLM engine (optional extra vllm)"),
    "openai": Entry("llm", "personarag.llm.openai_backend:OpenAILLM", "model", "any OpenAI-compatible chat-completions server"),
    "transformers": Entry("llm", "personarag.llm.transformers_backend:TransformersLLM", "model", "local/hub causal LM or GGUF via transformers"),
    "scripted": Entry("llm", "personarag.testing.scripted:ScriptedLLM", None, "scripted LLM for deterministic tests (a test double, imported only when named)"),
}


def names(role: str | None = None) -> list[str]:
    return sorted(name for name, entry in REGISTRY.items() if role is None or entry.role == role)


def _entry(name: str, role: str | None) -> Entry:
    entry = REGISTRY.get(name)
    if entry is None or (role is not None and entry.role != role):
        valid = ", ".join(names(role))
        what = f"{role} " if role else ""
        raise UnknownSpecError(f"unknown {what}spec {name!r}; valid {what}names: {valid}")
    return entry


def split_spec(spec: str) -> tuple[str, str | None]:
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"a spec must be a non-empty string like 'bm25' or 'dense:PATH', got {spec!r}")
    name, sep, arg = spec.strip().partition(":")
    return name, (arg if sep else None)


def build(spec: str | Component | Mapping[str, Any], role: str | None = None, **params: Any) -> Component:
    """Build a component from a spec string, a config dict, or pass a component through."""
    if isinstance(spec, Component):
        if role is not None and spec.role != role:
            raise InputError(f"expected a {role}, got {type(spec).__name__} (a {spec.role or 'component'})")
        return spec
    if isinstance(spec, Mapping):
        return build_from_config(spec, role=role)
    name, arg = split_spec(spec)
    entry = _entry(name, role)
    if arg is not None:
        if entry.arg is None:
            raise InputError(f"spec {spec!r}: {name!r} takes no argument after ':'")
        if entry.arg in params:
            raise InputError(f"spec {spec!r} sets {entry.arg!r} and so does the keyword argument; give one")
        params[entry.arg] = arg
    cls = entry.load()
    check_params(cls, name, params, entry.arg)
    return cls(**params)


def signature(cls: type) -> tuple[list[inspect.Parameter], bool]:
    """The parameters `cls(...)` accepts and whether it takes any keyword at all.

    A `**options` that a constructor passes on to its base class (the LLM rerankers share
    their keyword options this way) stands for that base constructor's parameters.
    """
    found: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        params = list(inspect.signature(klass.__init__).parameters.values())[1:]
        for p in params:
            if p.kind is not inspect.Parameter.VAR_KEYWORD and p.name not in found:
                found[p.name] = p
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return list(found.values()), False
    return list(found.values()), True


def parameters(cls: type) -> list[str]:
    """The keyword parameters `cls(...)` accepts, in signature order."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in signature(cls)[0] if p.kind in kinds]


def check_params(cls: type, name: str, params: Mapping[str, Any], arg: str | None = None) -> None:
    """InputError for a parameter `cls` does not take or a required one not given, listing the valid ones
    (instead of the TypeError the constructor would raise)."""
    accepted, open_keywords = signature(cls)
    valid = parameters(cls)
    listing = f"valid parameters of {name!r}: {', '.join(valid) or 'none'}"
    if not open_keywords:
        unknown = [key for key in params if key not in valid]
        if unknown:
            close = difflib.get_close_matches(unknown[0], valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            which = "parameter" if len(unknown) == 1 else "parameters"
            raise InputError(f"{name!r}: unknown {which} {', '.join(map(repr, unknown))}{hint}; {listing}")
    missing = [p.name for p in accepted if p.name in valid and p.default is inspect.Parameter.empty and p.name not in params]
    if missing:
        how = f" (as in '{name}:{missing[0].upper()}')" if missing[0] == arg else ""
        raise InputError(f"{name!r} needs the parameter {missing[0]!r}{how}; {listing}")


def build_from_config(config: Mapping[str, Any], role: str | None = None) -> Component:
    if "spec" not in config:
        raise InputError(f"a component config needs a 'spec' key, got keys {sorted(config)}")
    name, arg = split_spec(config["spec"])
    params = {k: _from_config_value(v) for k, v in (config.get("params") or {}).items()}
    full = config["spec"] if arg is None else f"{name}:{arg}"
    return build(full, role=role, **params)


def _from_config_value(value: Any) -> Any:
    if isinstance(value, Mapping) and "spec" in value and set(value) <= {"spec", "params"}:
        return build_from_config(value)
    if isinstance(value, list):
        return [_from_config_value(v) for v in value]
    return value
