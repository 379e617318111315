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
from typing import Any, TypeVar

from personarag.llm.base import LLM, Chat, Completion, GenerationConfig
from personarag.llm.stage import LLMStage, StageLog, positive_int
from personarag.prompts import PromptTemplate, doc_text, load_prompt
from personarag.rerankers.base import Reranker, check_depth
from personarag.types import Document, Ranking, ScoredDoc, StageTrace

logger = logging.getLogger(__name__)

T = TypeVar("T")
Algorithm = Generator[Chat, Completion, T]

__all__ = ["Algorithm", "LLMReranker", "StageLog", "by_rank", "drive", "positive_int"]


class LLMReranker(LLMStage, Reranker):
    """Base of pointwise / listwise / setwise / groupwise rerankers; the keyword options they all take.

    `llm` is an LLM object or a spec resolved by `personarag.llm.load_llm` on first use
    (`"transformers:PATH"`, `"vllm:MODEL"`, `"openai:MODEL"`, a bare path).
    `prompt`: a shipped template name, a YAML path, a template string or a PromptTemplate
    (None: the reranker's default, its `-reason` variant with `reasoning=True`).
    `max_doc_tokens` is the per-document budget: each candidate's text is cut to that
    many tokens with `LLM.truncate` before it enters a prompt, so a window of long
    documents still fits the model's context (None: no truncation).
    `max_new_tokens`: None takes what the answer format needs (`answer_tokens`), plus
    `reasoning_tokens` with `reasoning=True`. `depth`: this stage's own depth (see Reranker).
    Subclasses take their own parameters and pass these on as `**options`.
    """

    default_prompt: str = ""
    required_placeholders: tuple[str, ...] = ("query",)

    def __init__(
        self,
        llm: LLM | str,
        *,
        reasoning: bool = False,
        prompt: Any = None,
        max_doc_tokens: int | None = 256,
        max_new_tokens: int | None = None,
        reasoning_tokens: int = 1024,
        temperature: float = 0.0,
        seed: int = 0,
        depth: int | None = None,
    ) -> None:
        self._set_llm(llm)
        self.max_doc_tokens = positive_int("max_doc_tokens", max_doc_tokens, allow_none=True)
        self.depth = check_depth(depth)
        self.reasoning = bool(reasoning)
        default = self.default_prompt + ("-reason" if reasoning else "")
        self.template: PromptTemplate = load_prompt(prompt, default, self.required_placeholders)
        if max_new_tokens is None:
            extra = positive_int("reasoning_tokens", reasoning_tokens) if reasoning else 0
            max_new_tokens = self.answer_tokens() + extra
        self._set_generation(max_new_tokens, temperature, seed, self.n_samples())

    def answer_tokens(self) -> int:
        """The new tokens an answer needs without reasoning (when max_new_tokens is None)."""
        return 256

    def n_samples(self) -> int:
        """Answers drawn per prompt."""
        return 1

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


def drive(llm: LLM, algorithms: Sequence[Algorithm[T]], config: GenerationConfig, logs: Sequence[StageLog]) -> list[T]:
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
