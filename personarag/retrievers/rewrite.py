"""Query reasoning / rewriting by an LLM before retrieval (BRIGHT's "reasoning query" setting).

The LLM reads each query and writes out what a relevant document would contain; the
inner retriever then searches with that text (`mode="replace"`) or with the query and
that text together (`mode="expand"`, the default). Rankings keep the original query;
the rewritten text and the LLM usage ride on a `rewrite` StageTrace.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, ClassVar

from personarag import registry
from personarag.component import Component
from personarag.errors import InputError
from personarag.retrievers.base import Retriever
from personarag.types import Corpus, Query, Ranking, StageTrace

DEFAULT_TEMPLATE = (
    "Here is a question or post someone needs documents for.\n\n{query}\n\n"
    "First, identify the essential problem. Then reason step by step about which concepts, "
    "theorems, functions or facts a document must contain to help. Finally, write a draft "
    "answer that mentions them."
)
MODES = ("expand", "replace")


class QueryRewriteRetriever(Retriever):
    spec_name: ClassVar[str] = "rewrite"

    def __init__(
        self,
        retriever: str | Component | dict[str, Any],
        llm: Any = None,
        *,
        mode: str = "expand",
        template: str = DEFAULT_TEMPLATE,
        max_new_tokens: int = 512,
    ) -> None:
        from personarag.llm import load_llm

        if llm is None:
            raise InputError("the rewrite retriever needs an llm (an LLM object or a spec like 'transformers:PATH')")
        if mode not in MODES:
            raise InputError(f"rewrite mode must be one of {', '.join(MODES)}, got {mode!r}")
        if "{query}" not in template:
            raise InputError("the rewrite template must contain the placeholder {query}")
        self.retriever: Retriever = registry.build(retriever, role="retriever")  # type: ignore[assignment]
        self.llm = load_llm(llm)
        self.mode = mode
        self.template = template
        self.max_new_tokens = max_new_tokens
        self.needs_corpus = self.retriever.needs_corpus  # type: ignore[misc]

    def _index(self, corpus: Corpus) -> None:
        self.retriever.index(corpus)

    def rewrite(self, queries: list[Query]) -> tuple[list[Query], list[StageTrace]]:
        from personarag.llm import GenerationConfig

        prompts = [self.template.format(query=q.text) for q in queries]
        completions = self.llm.generate(prompts, GenerationConfig(max_new_tokens=self.max_new_tokens))
        rewritten, traces = [], []
        for query, completion in zip(queries, completions):
            reasoning = _strip_think_tags(completion.text)
            problems: tuple[str, ...] = ()
            if not reasoning.strip():
                problems = ("the LLM wrote nothing; the original query was used",)
                text = query.text
            else:
                text = reasoning if self.mode == "replace" else f"{query.text}\n{reasoning}"
            rewritten.append(dataclasses.replace(query, text=text))
            traces.append(StageTrace("rewrite", usage=completion.usage, problems=problems, reasoning=reasoning))
        return rewritten, traces

    def _retrieve(self, queries: list[Query], k: int) -> list[Ranking]:
        rewritten, traces = self.rewrite(queries)
        rankings = self.retriever.retrieve(rewritten, k=k)
        return [
            Ranking(query=original, docs=ranking.docs, trace=(trace,) + ranking.trace)
            for original, ranking, trace in zip(queries, rankings, traces)
        ]


def _strip_think_tags(text: str) -> str:
    """Keep the reasoning's words, drop `<think>` markup (closed or not)."""
    return re.sub(r"</?think>", " ", text).strip()
