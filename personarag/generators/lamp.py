"""The LaMP generator: a task prompt with the retrieved profile items, answered by an LLM.

Spec `lamp:MODEL` (MODEL is an LLM spec, e.g. `lamp:transformers:PATH`). The task comes from
each query's `meta["task"]` (the LaMP loader sets it), or is fixed with a parameter:
`build("lamp:PATH", task="LaMP-3")`; a fixed task and a query of another task is an InputError.
The Output's text is the raw completion (stripped); `personarag.evaluation.lamp_metrics`
parses it into the task's answer space when scoring.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from personarag.errors import InputError
from personarag.evaluation.lamp_tasks import get_task
from personarag.prompts.budget import Fitted
from personarag.generators.floors import query_task
from personarag.generators.lamp_prompts import LampPromptBuilder
from personarag.generators.llm_generator import LLMGenerator
from personarag.generators.summary_context import SummaryContext
from personarag.llm.base import LLM
from personarag.llm.labels import CALIBRATIONS, choose_labels, label_prior
from personarag.types import Output, Ranking


class LaMPGenerator(SummaryContext, LLMGenerator):
    """Personalized generation for one LaMP task.

    `max_prompt_tokens`: the prompt's token budget, counted with the LLM's tokenizer
    (profile items cut and dropped to fit, see `personarag.prompts.budget`; LaMP's
    baselines used 512). `max_new_tokens`: None takes the task's default from the template
    (short for labels and ratings, longer for headlines and tweets). `min_item_tokens`:
    the smallest share of the budget a profile item gets. `templates`: a YAML file
    replacing the shipped `prompts/generation/lamp.yaml`. `answer_mode`: "generate" (free
    text, parsed when scored) or "choose": for the label and rating tasks (LaMP-1/2/3), the
    label with the highest log-probability under `LLM.score` (summed over its tokens), so
    every answer is a valid label; the log-probabilities go into the trace.

    Options of the choice (see `personarag.llm.labels`): `length_norm=True` compares the mean
    log-probability per answer token instead of the sum. `calibration="content-free"` divides
    each prompt's label distribution by the distribution under content-free inputs
    (`content_free`, default ("N/A",); Zhao et al. 2021's set is ("N/A", "", "[MASK]")): the
    task's prompt with the example's content (the template's `content` regex, else the whole
    input) replaced by each filler and no profile items. The prior is computed once per
    content-free prompt (so once per model, task and template) and kept; its LLM calls go
    through the LLM's cache like any other.

    `summary`, `store`, `summary_tokens`: the user's stored summary at the head of the prompt,
    alone (no retriever) or with the retrieved items under the budget; see
    `personarag.generators.summary_context` (True reads the summary of the task's kind).
    """

    spec_name = "lamp"

    def __init__(
        self,
        llm: LLM | str,
        task: str | None = None,
        *,
        templates: str | Path | None = None,
        answer_mode: str = "generate",
        calibration: str = "none",
        length_norm: bool = False,
        content_free: Sequence[str] = ("N/A",),
        summary: bool | str = False,
        store: Any = None,
        summary_tokens: int = 128,
        **options: Any,
    ) -> None:
        """`task`: None takes each query's `meta["task"]` (the LaMP loader sets it); a task given
        here and a query of another task is an InputError. `options`: the keyword options of
        every generator (`LLMGenerator`)."""
        if answer_mode not in ("generate", "choose"):
            raise InputError(f"answer_mode must be 'generate' or 'choose', got {answer_mode!r}")
        self.answer_mode = answer_mode
        if calibration not in CALIBRATIONS:
            raise InputError(f"calibration must be one of {list(CALIBRATIONS)}, got {calibration!r}")
        if not isinstance(length_norm, bool):
            raise InputError(f"length_norm must be True or False, got {length_norm!r}")
        if isinstance(content_free, str) or not content_free or not all(isinstance(f, str) for f in content_free):
            raise InputError(f"content_free must be a non-empty list of strings (e.g. ['N/A', '', '[MASK]']), got {content_free!r}")
        if answer_mode == "generate" and (calibration != "none" or length_norm):
            raise InputError("calibration and length_norm are options of answer_mode='choose'; "
                             f"got answer_mode='generate' with calibration={calibration!r}, length_norm={length_norm}")
        self.calibration, self.length_norm, self.content_free = calibration, length_norm, tuple(content_free)
        self._priors: dict[tuple[Any, ...], tuple[float, ...]] = {}
        self._init_summary(summary, store, summary_tokens)
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

    def _choose(self, rankings: list[Ranking], prompts: list[str], answers: tuple[str, ...]) -> list[tuple[str, Any, bool, dict[str, Any]]]:
        priors = [self.prior(r.query.text) if self.calibration != "none" else None for r in rankings]
        out: list[Any] = [None] * len(prompts)
        groups: dict[Any, list[int]] = {}
        for position, prior in enumerate(priors):
            groups.setdefault(prior, []).append(position)
        for prior, positions in groups.items():
            chosen = choose_labels(self.llm, [prompts[p] for p in positions], answers, length_norm=self.length_norm, prior=prior)
            for p, c in zip(positions, chosen):
                out[p] = (c.label, c.usage, c.cached, c.trace())
        return out

    def prior(self, input_text: str) -> tuple[float, ...]:
        """The label prior of the content-free prompts of `input_text`'s task template (kept per
        model, content-free prompts and length normalisation)."""
        if self.task is None:
            raise InputError("the LaMP generator has no task yet: give task= or generate for queries with meta['task']")
        prompts = tuple(self.builder.content_free(input_text, filler) for filler in self.content_free)
        key = (self.llm.model_name, prompts, self.length_norm)
        if key not in self._priors:
            self._priors[key] = label_prior(self.llm, list(prompts), self._choices(), length_norm=self.length_norm)
        return self._priors[key]

    def default_max_new_tokens(self) -> int:
        return self._default_new_tokens

    def _summaries(self, rankings: list[Ranking]) -> list[tuple[str | None, dict[str, Any], list[str]]]:
        return self._user_summaries(rankings, self._summary_kind(self.task or "LaMP-3"))

    def _prompt(self, ranking: Ranking, summary: str | None = None) -> Fitted:
        if self.task is None:
            raise InputError("the LaMP generator has no task yet: give task= or generate for queries with meta['task']")
        return self.builder.build(ranking.query.text, [d.doc for d in ranking.docs], summary=summary)
