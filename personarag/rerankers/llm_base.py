"""What every LLM reranker shares: the LLM (object or spec), prompts, per-doc truncation,
per-query accounting, and a driver that batches sequential algorithms across queries.

Sequential rerankers (sliding windows, heapsort) are written as one generator per query
that yields a prompt and receives the Completion, or yields an `Ask` (several prompts to
generate, to score over a label set, or to answer with a constrained permutation) and
receives one result per prompt; `drive` sends every active query's next request to the
LLM together (one call per kind of request), so a batch of queries costs as many LLM
round trips as its longest query, not their sum.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from personarag.errors import InputError
from personarag.llm.base import LLM, Chat, GenerationConfig
from personarag.llm.labels import score_labels
from personarag.llm.stage import LLMStage, StageLog, positive_int
from personarag.prompts import PromptTemplate, doc_text, load_prompt
from personarag.rerankers.base import Reranker, check_depth
from personarag.types import Document, Ranking, ScoredDoc, StageTrace

logger = logging.getLogger(__name__)

T = TypeVar("T")
Algorithm = Generator[Any, Any, T]  # yields a Chat (receives a Completion) or an Ask (receives a list)

__all__ = ["DEBIAS", "Algorithm", "Ask", "check_debias", "orders", "LLMReranker", "StageLog", "by_rank", "drive", "positive_int"]

ASK_KINDS = ("generate", "labels", "permute")


@dataclass(frozen=True)
class Ask:
    """Prompts of one algorithm step: `generate` (Completions), `labels` (LabelScores over
    `labels`, each written after `prefix`) or `permute` (Completions that are permutations of `labels`)."""

    chats: tuple[Chat, ...]
    kind: str = "generate"
    labels: tuple[str, ...] = ()
    prefix: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ASK_KINDS:
            raise ValueError(f"Ask kind must be one of {ASK_KINDS}, got {self.kind!r}")


DEBIAS = (None, "reverse", "rotate")


def check_debias(debias: Any) -> Any:
    if debias not in DEBIAS:
        raise InputError(f"debias must be None, 'reverse' or 'rotate', got {debias!r}")
    return debias


def orders(n: int, debias: str | None) -> list[list[int]]:
    """The orders a window of n candidates is shown in: as given; plus reversed; or every rotation."""
    identity = list(range(n))
    if debias == "reverse":
        return [identity, identity[::-1]]
    if debias == "rotate":
        return [identity[r:] + identity[:r] for r in range(n)]
    return [identity]


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
    """Run one generator per query to completion, batching their requests step by step."""
    results: list[Any] = [None] * len(algorithms)
    pending: dict[int, Any] = {}

    def advance(i: int, value: Any) -> None:
        try:
            pending[i] = algorithms[i].send(value) if value is not None else next(algorithms[i])
        except StopIteration as stop:
            results[i] = stop.value
            pending.pop(i, None)

    for i in range(len(algorithms)):
        advance(i, None)
    while pending:
        asks = {i: request if isinstance(request, Ask) else Ask((request,)) for i, request in pending.items()}
        groups: dict[tuple[Any, ...], list[tuple[int, int]]] = {}
        for i, ask in asks.items():
            key = (ask.kind,) if ask.kind == "generate" else (ask.kind, ask.labels, ask.prefix)
            groups.setdefault(key, []).extend((i, k) for k in range(len(ask.chats)))
        answers: dict[tuple[int, int], Any] = {}
        for key, owners in groups.items():
            chats = [asks[i].chats[k] for i, k in owners]
            if key[0] == "generate":
                outputs: list[Any] = llm.generate(chats, config)
            elif key[0] == "labels":
                outputs = score_labels(llm, chats, key[1], prefix=key[2])
            else:
                outputs = llm.permute(chats, key[1], config)
            for owner, output in zip(owners, outputs):
                logs[owner[0]].add(output.usage)
                answers[owner] = output
        for i in list(pending):
            got = [answers[i, k] for k in range(len(asks[i].chats))]
            advance(i, got if isinstance(pending[i], Ask) else got[0])
    return results


def by_rank(docs: Sequence[Document], order: Sequence[int], reasonings: dict[str, str] | None = None) -> list[ScoredDoc]:
    """ScoredDocs in `order` (indices into docs), scored n, n-1, ..., 1 so that score order is rank order."""
    n = len(order)
    reasonings = reasonings or {}
    return [ScoredDoc(docs[i], float(n - rank), reasonings.get(docs[i].id)) for rank, i in enumerate(order)]
