"""What every stage that calls an LLM shares, rerankers and generators alike.

`LLMStage` holds the LLM (an object, or a spec loaded by `personarag.llm.load_llm` on
first use), the stage name written on traces, and the stage's `GenerationConfig`.
`StageLog` gathers one query's usage, problems, reasoning and raw model answers during
one call and turns them into the query's `StageTrace`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from personarag.errors import InputError
from personarag.llm.base import LLM, GenerationConfig
from personarag.types import StageTrace, Usage


def positive_int(name: str, value: Any, minimum: int = 1, *, allow_none: bool = False) -> Any:
    """`value` when it is an integer >= minimum (or None where allowed); InputError otherwise."""
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}{' or None' if allow_none else ''}, got {value!r}")
    return value


@dataclass
class StageLog:
    """Usage, problems, reasoning and raw answers gathered for one query during one stage call."""

    usages: list[Usage] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    answers: list[dict[str, str]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def add(self, usage: Usage) -> None:
        self.usages.append(usage)

    def answer(self, where: str, text: str) -> None:
        """Keep the model's raw answer (with `where` it was asked), so a trace shows what the model said."""
        self.answers.append({"where": where, "text": text})

    def trace(self, stage: str) -> StageTrace:
        info = dict(self.info)
        if self.answers:
            info["answers"] = list(self.answers)
        return StageTrace(
            stage=stage,
            usage=Usage.total(self.usages),
            problems=tuple(self.problems),
            reasoning="\n\n".join(self.reasoning) if self.reasoning else None,
            info=info,
        )


class LLMStage:
    """Mixin of the components that call an LLM: `llm`, `stage`, `generation`.

    Subclasses call `_set_llm` and `_set_generation` from their constructor.
    """

    spec_name: str
    generation: GenerationConfig

    def _set_llm(self, llm: LLM | str) -> None:
        if not isinstance(llm, (LLM, str)) or (isinstance(llm, str) and not llm.strip()):
            raise InputError(f"llm must be an LLM object or a spec string like 'transformers:PATH', got {llm!r}")
        self._llm_arg = llm
        self._llm: LLM | None = llm if isinstance(llm, LLM) else None

    def _set_generation(self, max_new_tokens: int, temperature: float, seed: int, n: int = 1) -> None:
        positive_int("max_new_tokens", max_new_tokens)
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or temperature < 0:
            raise InputError(f"temperature must be a number >= 0, got {temperature!r}")
        self.max_new_tokens = max_new_tokens
        self.temperature = float(temperature)
        self.seed = seed
        self.generation = GenerationConfig(max_new_tokens=max_new_tokens, temperature=float(temperature), n=n, seed=seed)

    def generation_config(self) -> GenerationConfig:
        return self.generation

    @property
    def llm(self) -> LLM:
        """The LLM, loaded from its spec on first use (Component.children relies on this name)."""
        if self._llm is None:
            from personarag.llm import load_llm

            self._llm = load_llm(self._llm_arg)
        return self._llm

    @property
    def stage(self) -> str:
        return self.spec_name or type(self).__name__
