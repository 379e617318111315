"""What every LLM reranker shares: the LLM (object or spec), prompts, per-doc truncation,
per-query accounting, and a driver that batches sequential algorithms across queries.

Sequential rerankers (sliding windows, heapsort) are written as one generator per query
that yields a prompt and receives the Completion; `drive` sends every active query's
next prompt to the LLM in one `generate` call, so a batch of queries costs as many
LLM round trips as its longest query, not their sum.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from personarag.errors import InputError
from personarag.llm.base import LLM, Chat, Completion, GenerationConfig
from personarag.rerankers.base import Reranker
from personarag.rerankers.prompts import PromptTemplate, doc_text, load_prompt
from personarag.types import Document, Ranking, ScoredDoc, StageTrace, Usage

logger = logging.getLogger(__name__)

T = TypeVar("T")
Algorithm = Generator[Chat, Completion, T]


@dataclass
class QueryLog:
    """Usage, problems and reasoning gathered for one query during one rerank call."""

    usages: list[Usage] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def add(self, usage: Usage) -> None:
        self.usages.append(usage)

    def trace(self, stage: str) -> StageTrace:
        return StageTrace(
            stage=stage,
            usage=Usage.total(self.usages),
            problems=tuple(self.problems),
            reasoning="\n\n".join(self.reasoning) if self.reasoning else None,
            info=dict(self.info),
        )


def positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


class LLMReranker(Reranker):
    """Base of pointwise / listwise / setwise / groupwise rerankers.

    `llm` is an LLM object or a spec resolved by `personarag.llm.load_llm` on first use
    (`"transformers:PATH"`, `"vllm:MODEL"`, `"openai:MODEL"`, a bare path).
    `max_doc_tokens` is the per-document budget: each candidate's text is cut to that
    many tokens with `LLM.truncate` before it enters a prompt, so a window of long
    documents still fits the model's context (None: no truncation).
    """

    default_prompt: str = ""
    required_placeholders: tuple[str, ...] = ("query",)

    def _setup(self, llm: LLM | str, prompt: Any, max_doc_tokens: int | None, reasoning: bool = False) -> None:
        if not isinstance(llm, (LLM, str)) or (isinstance(llm, str) and not llm.strip()):
            raise InputError(f"llm must be an LLM object or a spec string like 'transformers:PATH', got {llm!r}")
        if max_doc_tokens is not None:
            positive_int("max_doc_tokens", max_doc_tokens)
        self._llm_arg = llm
        self._llm: LLM | None = llm if isinstance(llm, LLM) else None
        self.max_doc_tokens = max_doc_tokens
        self.reasoning = bool(reasoning)
        default = self.default_prompt + ("-reason" if reasoning else "")
        self.template: PromptTemplate = load_prompt(prompt, default, self.required_placeholders)

    @property
    def llm(self) -> LLM:
        if self._llm is None:
            from personarag.llm import load_llm

            self._llm = load_llm(self._llm_arg)
        return self._llm

    @property
    def stage(self) -> str:
        return self.spec_name or type(self).__name__

    def _texts(self, docs: Sequence[ScoredDoc]) -> dict[str, str]:
        """Prompt text of each candidate (by doc id), truncated to the per-doc budget."""
        out: dict[str, str] = {}
        for scored in docs:
            if scored.doc.id not in out:
                out[scored.doc.id] = self._doc_text(scored.doc)
        return out

    def _doc_text(self, doc: Document) -> str:
        text = doc_text(doc)
        if self.max_doc_tokens is not None:
            text = " ".join(self.llm.truncate(text, self.max_doc_tokens).split())
        return text

    def _rerank(self, rankings: list[Ranking]) -> list[Ranking]:
        out: list[Ranking | None] = [None] * len(rankings)
        todo = []
        for position, ranking in enumerate(rankings):
            if len(ranking.docs) <= 1:  # nothing to order: no LLM call
                out[position] = ranking.with_stage(ranking.docs, StageTrace(self.stage, info={"skipped": "fewer than 2 candidates"}))
            else:
                todo.append(position)
        if todo:
            done = self._rerank_many([rankings[p] for p in todo])
            for position, ranking in zip(todo, done):
                out[position] = ranking
        return [r for r in out if r is not None]

    def _rerank_many(self, rankings: list[Ranking]) -> list[Ranking]:
        """Rankings with at least two candidates each."""
        raise NotImplementedError


def drive(llm: LLM, algorithms: Sequence[Algorithm[T]], config: GenerationConfig, logs: Sequence[QueryLog]) -> list[T]:
    """Run one generator per query to completion, batching their prompts step by step."""
    results: list[Any] = [None] * len(algorithms)
    pending: dict[int, Chat] = {}
    for i, algorithm in enumerate(algorithms):
        try:
            pending[i] = next(algorithm)
        except StopIteration as stop:
            results[i] = stop.value
    while pending:
        order = list(pending)
        completions = llm.generate([pending[i] for i in order], config)
        for i, completion in zip(order, completions):
            logs[i].add(completion.usage)
            try:
                pending[i] = algorithms[i].send(completion)
            except StopIteration as stop:
                results[i] = stop.value
                del pending[i]
    return results


def by_rank(docs: Sequence[Document], order: Sequence[int], reasonings: dict[str, str] | None = None) -> list[ScoredDoc]:
    """ScoredDocs in `order` (indices into docs), scored n, n-1, ..., 1 so that score order is rank order."""
    n = len(order)
    reasonings = reasonings or {}
    return [ScoredDoc(docs[i], float(n - rank), reasonings.get(docs[i].id)) for rank, i in enumerate(order)]
