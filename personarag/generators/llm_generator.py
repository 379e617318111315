"""What prompt-based generators share: the LLM (object or spec), batching, and the Output trace.

A subclass builds one prompt per ranking (`_prompt`); this base sends them to the LLM in
batches of `batch_size` through `LLM.generate` (which serves repeats from the LLM's cache),
and returns one Output per ranking with the raw completion (stripped) as text, the prompt,
the context items that made it into the prompt, and a StageTrace with the LLM usage, the
problems met (items dropped, input cut) and what was dropped or truncated.
"""

from __future__ import annotations

import logging
from typing import Any

from personarag.errors import InputError
from personarag.generators.base import Generator
from personarag.generators.budget import Fitted
from personarag.llm.base import LLM, GenerationConfig
from personarag.types import Output, Ranking, StageTrace

logger = logging.getLogger(__name__)


def _positive_int(name: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InputError(f"{name} must be a positive integer{' or None' if allow_none else ''}, got {value!r}")


class LLMGenerator(Generator):
    """Base of the LaMP and RAG generators; see the module docstring."""

    def _setup(
        self,
        llm: LLM | str,
        max_prompt_tokens: int | None,
        max_new_tokens: int | None,
        temperature: float,
        seed: int,
        batch_size: int,
    ) -> None:
        if not isinstance(llm, (LLM, str)) or (isinstance(llm, str) and not llm.strip()):
            raise InputError(f"llm must be an LLM object or a spec string like 'transformers:PATH', got {llm!r}")
        _positive_int("max_prompt_tokens", max_prompt_tokens, allow_none=True)
        _positive_int("max_new_tokens", max_new_tokens, allow_none=True)
        _positive_int("batch_size", batch_size)
        if not isinstance(temperature, (int, float)) or temperature < 0:
            raise InputError(f"temperature must be a number >= 0, got {temperature!r}")
        self._llm_arg = llm
        self._llm: LLM | None = llm if isinstance(llm, LLM) else None
        self.max_prompt_tokens = max_prompt_tokens
        self.max_new_tokens = max_new_tokens
        self.temperature = float(temperature)
        self.seed = seed
        self.batch_size = batch_size

    @property
    def llm(self) -> LLM:
        if self._llm is None:
            from personarag.llm import load_llm

            self._llm = load_llm(self._llm_arg)
        return self._llm

    @property
    def stage(self) -> str:
        return self.spec_name or type(self).__name__

    def generation_config(self) -> GenerationConfig:
        return GenerationConfig(
            max_new_tokens=self.max_new_tokens or self.default_max_new_tokens(),
            temperature=self.temperature,
            seed=self.seed,
        )

    def default_max_new_tokens(self) -> int:
        return 128

    def _prompt(self, ranking: Ranking) -> Fitted:
        raise NotImplementedError

    def _choices(self) -> tuple[str, ...]:
        """Answers to choose among by log-probability instead of generating (empty: generate)."""
        return ()

    def _choose(self, prompts: list[str], answers: tuple[str, ...]) -> list[tuple[str, Any, bool, dict[str, Any]]]:
        """The most likely answer of each prompt (the first one listed on a tie)."""
        out = []
        for scores in self.llm.score(prompts, list(answers)):
            best = max(answers, key=lambda a: (scores.logprobs[a], -answers.index(a)))
            out.append((best, scores.usage, scores.cached, {"logprobs": dict(scores.logprobs)}))
        return out

    def _generate(self, rankings: list[Ranking]) -> list[Output]:
        config = self.generation_config()
        outputs: list[Output] = []
        for start in range(0, len(rankings), self.batch_size):
            batch = rankings[start : start + self.batch_size]
            fitted = [self._prompt(r) for r in batch]
            answers = self._choices()
            if answers:
                results = self._choose([f.text for f in fitted], answers)
            else:
                results = [(c.text, c.usage, c.cached, {"raw": c.text}) for c in self.llm.generate([f.text for f in fitted], config)]
            for ranking, fit, (text, usage, cached, extra) in zip(batch, fitted, results):
                by_id = {d.doc.id: d for d in ranking.docs}
                context = tuple(by_id[i] for i in fit.used)
                info = {
                    "prompt_tokens": fit.tokens,
                    "dropped": list(fit.dropped),
                    "truncated": list(fit.truncated),
                    "cached": cached,
                    **extra,
                }
                trace = StageTrace(self.stage, usage=usage, problems=fit.problems, info=info)
                outputs.append(
                    Output(
                        query=ranking.query,
                        text=text.strip(),
                        context=context,
                        trace=ranking.trace + (trace,),
                        prompt=fit.text,
                    )
                )
        return outputs
