"""The LaMP generator: a task prompt with the retrieved profile items, answered by an LLM.

Spec `lamp:MODEL` (MODEL is an LLM spec, e.g. `lamp:transformers:PATH`). The task comes from
each query's `meta["task"]` (the LaMP loader sets it), or is fixed with a parameter:
`build("lamp:PATH", task="LaMP-3")`; a fixed task and a query of another task is an InputError.
The Output's text is the raw completion (stripped); `personarag.evaluation.lamp_metrics`
parses it into the task's answer space when scoring.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from personarag.errors import InputError
from personarag.evaluation.lamp_tasks import get_task
from personarag.generators.budget import Fitted
from personarag.generators.floors import query_task
from personarag.generators.lamp_prompts import LampPromptBuilder
from personarag.generators.llm_generator import LLMGenerator
from personarag.llm.base import LLM
from personarag.types import Output, Ranking


class LaMPGenerator(LLMGenerator):
    """Personalized generation for one LaMP task.

    `max_prompt_tokens`: the prompt's token budget, counted with the LLM's tokenizer
    (profile items cut and dropped to fit, see `personarag.generators.budget`; LaMP's
    baselines used 512). `max_new_tokens`: None takes the task's default from the template
    (short for labels and ratings, longer for headlines and tweets). `min_item_tokens`:
    the smallest share of the budget a profile item gets. `templates`: a YAML file
    replacing the shipped `prompts/generation/lamp.yaml`. `answer_mode`: "generate" (free
    text, parsed when scored) or "choose": for the label and rating tasks (LaMP-1/2/3), the
    label with the highest log-probability under `LLM.score` (summed over its tokens), so
    every answer is a valid label; the log-probabilities go into the trace.
    """

    spec_name = "lamp"

    def __init__(
        self,
        llm: LLM | str,
        task: str | None = None,
        *,
        templates: str | Path | None = None,
        answer_mode: str = "generate",
        **options: Any,
    ) -> None:
        """`task`: None takes each query's `meta["task"]` (the LaMP loader sets it); a task given
        here and a query of another task is an InputError. `options`: the keyword options of
        every generator (`LLMGenerator`)."""
        if answer_mode not in ("generate", "choose"):
            raise InputError(f"answer_mode must be 'generate' or 'choose', got {answer_mode!r}")
        self.answer_mode = answer_mode
        self.templates = templates
        self._fixed_task = None if task is None else get_task(task).name
        self._explicit_new_tokens = options.get("max_new_tokens") is not None
        self.task: str | None = None
        self._builder: LampPromptBuilder | None = None
        self._default_new_tokens = 128  # until a task is known
        if self._fixed_task is not None:
            # Read the templates now so a bad template file fails at construction, not mid-run.
            self._bind(self._fixed_task)
        super().__init__(llm, **options)

    def _bind(self, task: str) -> None:
        """Use `task`'s prompt (and its default answer length, unless max_new_tokens was given)."""
        if self.answer_mode == "choose" and not get_task(task).labels:
            raise InputError(f"answer_mode='choose' needs a task with a label set; {task} generates free text")
        self._default_new_tokens = LampPromptBuilder(task, templates=self.templates).template.max_new_tokens
        self.task = task
        self._builder = None
        if hasattr(self, "generation") and not self._explicit_new_tokens:
            self._set_generation(self._default_new_tokens, self.temperature, self.seed)

    def _generate(self, rankings: list[Ranking]) -> list[Output]:
        by_task: dict[str, list[int]] = {}
        for position, ranking in enumerate(rankings):
            by_task.setdefault(query_task(ranking, self._fixed_task, "the LaMP generator"), []).append(position)
        outputs: list[Output | None] = [None] * len(rankings)
        for task, positions in by_task.items():
            if task != self.task:
                self._bind(task)
            for position, output in zip(positions, super()._generate([rankings[p] for p in positions])):
                outputs[position] = output
        return outputs  # type: ignore[return-value]

    @property
    def builder(self) -> LampPromptBuilder:
        if self._builder is None:
            self._builder = LampPromptBuilder(
                self.task, self.max_prompt_tokens, self.llm, min_item_tokens=self.min_item_tokens, templates=self.templates
            )
        return self._builder

    def _choices(self) -> tuple[str, ...]:
        return get_task(self.task or "LaMP-3").labels if self.answer_mode == "choose" else ()

    def default_max_new_tokens(self) -> int:
        return self._default_new_tokens

    def _prompt(self, ranking: Ranking) -> Fitted:
        if self.task is None:
            raise InputError("the LaMP generator has no task yet: give task= or generate for queries with meta['task']")
        return self.builder.build(ranking.query.text, [d.doc for d in ranking.docs])
