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

from personarag.generators.base import Generator
from personarag.prompts.budget import Fitted
from personarag.llm.base import LLM
from personarag.llm.stage import LLMStage, StageLog, positive_int
from personarag.types import Output, Ranking

logger = logging.getLogger(__name__)


class LLMGenerator(LLMStage, Generator):
    """Base of the LaMP and RAG generators; see the module docstring. The keyword options they share:

    `max_prompt_tokens`: the prompt's token budget, counted with the LLM's tokenizer (None:
    no limit). `max_new_tokens`: None takes the template's default (`default_max_new_tokens`).
    `min_item_tokens`: the smallest share of the budget a context item gets before
    lower-ranked items are dropped. `batch_size`: prompts per LLM call.
    Subclasses take their own parameters and pass these on as `**options`, after
    setting the defaults that differ.
    """

    def __init__(
        self,
        llm: LLM | str,
        *,
        max_prompt_tokens: int | None = 512,
        max_new_tokens: int | None = None,
        temperature: float = 0.0,
        seed: int = 0,
        batch_size: int = 8,
        min_item_tokens: int = 16,
    ) -> None:
        self._set_llm(llm)
        self.max_prompt_tokens = positive_int("max_prompt_tokens", max_prompt_tokens, allow_none=True)
        self.batch_size = positive_int("batch_size", batch_size)
        self.min_item_tokens = positive_int("min_item_tokens", min_item_tokens)
        self._set_generation(max_new_tokens or self.default_max_new_tokens(), temperature, seed)

    def default_max_new_tokens(self) -> int:
        return 128

    def _prompt(self, ranking: Ranking, summary: str | None = None) -> Fitted:
        """The prompt of one ranking; `summary`: the user's summary to put at its head (or None)."""
        raise NotImplementedError

    def _summaries(self, rankings: list[Ranking]) -> list[tuple[str | None, dict[str, Any], list[str]]]:
        """Per ranking: the user summary for its prompt (None: none), its trace info and problems;
        generators with a `summary` option override this (see `summary_context`)."""
        return [(None, {}, []) for _ in rankings]

    def _choices(self) -> tuple[str, ...]:
        """Answers to choose among by log-probability instead of generating (empty: generate)."""
        return ()

    def _choose(self, rankings: list[Ranking], prompts: list[str], answers: tuple[str, ...]) -> list[tuple[str, Any, bool, dict[str, Any]]]:
        """The most likely answer of each prompt (the first one listed on a tie); `rankings` are the
        prompts' rankings, for subclasses whose choice depends on the query (calibration)."""
        from personarag.llm.labels import score_labels

        return [(s.labels[s.best], s.usage, s.cached, {"logprobs": s.as_dict()}) for s in score_labels(self.llm, prompts, answers)]

    def _generate(self, rankings: list[Ranking]) -> list[Output]:
        config = self.generation
        outputs: list[Output] = []
        for start in range(0, len(rankings), self.batch_size):
            batch = rankings[start : start + self.batch_size]
            summaries = self._summaries(batch)
            fitted = [self._prompt(r, text) for r, (text, _, _) in zip(batch, summaries)]
            answers = self._choices()
            if answers:
                results = self._choose(batch, [f.text for f in fitted], answers)
            else:
                results = [(c.text, c.usage, c.cached, {"raw": c.text}) for c in self.llm.generate([f.text for f in fitted], config)]
            for ranking, fit, (text, usage, cached, extra), (_, summary, problems) in zip(batch, fitted, results, summaries):
                by_id = {d.doc.id: d for d in ranking.docs}
                context = tuple(by_id[i] for i in fit.used)
                info = {"prompt_tokens": fit.tokens, "dropped": list(fit.dropped), "truncated": list(fit.truncated), "cached": cached, **extra}
                if summary:
                    info["summary"] = summary
                log = StageLog(usages=[usage], problems=list(fit.problems) + problems, info=info)
                outputs.append(
                    Output(
                        query=ranking.query,
                        text=text.strip(),
                        context=context,
                        trace=ranking.trace + (log.trace(self.stage),),
                        prompt=fit.text,
                    )
                )
        return outputs
