"""Plain retrieval-augmented question answering: numbered passages, then the question.

Spec `rag:MODEL` (MODEL is an LLM spec). The template is data
(`personarag/prompts/generation/rag.yaml`, or a YAML file with the same keys given as
`template`); passages are fitted to `max_prompt_tokens` by the rule in
`personarag.prompts.budget` (best-ranked first, texts cut, the lowest dropped).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from personarag.errors import InputError
from personarag.prompts.budget import Fitted, Item, TokenCounter, fit_items
from personarag.generators.llm_generator import LLMGenerator
from personarag.generators.summary_context import SummaryContext, with_summary
from personarag.llm.base import LLM
from personarag.prompts import fill, read_yaml, shipped_file
from personarag.types import Ranking

_KEYS = {"item", "long", "join", "with_context", "without_context", "max_new_tokens"}


@lru_cache(maxsize=8)
def read_rag_template(path: str | None = None) -> dict[str, Any]:
    source = Path(path) if path else shipped_file("generation/rag.yaml")
    data = read_yaml(source, "RAG template")
    if not isinstance(data, dict) or set(data) - _KEYS or {"item", "with_context", "without_context"} - set(data):
        raise InputError(f"{source}: a RAG template needs keys item, with_context, without_context (allowed: {sorted(_KEYS)})")
    return data


class RAGGenerator(SummaryContext, LLMGenerator):
    """Answers each query from its top-ranked documents (`context_k` in the Pipeline); with
    `summary`, the user's stored summary heads the prompt (see `summary_context`; True reads
    the "general" kind)."""

    spec_name = "rag"

    def __init__(self, llm: LLM | str, *, template: str | Path | None = None, summary: bool | str = False, store: Any = None,
                 summary_tokens: int = 128, **options: Any) -> None:
        """`options`: the keyword options of every generator (`LLMGenerator`), here with
        max_prompt_tokens 2048 and min_item_tokens 32 by default."""
        self.template = read_rag_template(str(template) if template else None)
        options.setdefault("max_prompt_tokens", 2048)
        options.setdefault("min_item_tokens", 32)
        self._init_summary(summary, store, summary_tokens)
        super().__init__(llm, **options)

    def default_max_new_tokens(self) -> int:
        return int(self.template.get("max_new_tokens", 128))

    def _assemble(self, items: list[str], question: str) -> str:
        if not items:
            return fill(self.template["without_context"], {"input": question})
        context = self.template.get("join", "\n").join(items)
        return fill(self.template["with_context"], {"input": question, "context": context})

    def _summaries(self, rankings: list[Ranking]) -> list[tuple[str | None, dict[str, Any], list[str]]]:
        return self._user_summaries(rankings, self._summary_kind("general"))

    def _prompt(self, ranking: Ranking, summary: str | None = None) -> Fitted:
        items = []
        for rank, scored in enumerate(ranking.docs, start=1):
            doc = scored.doc
            values = {"rank": rank, "title": doc.title or "", "title_prefix": f"{' '.join(doc.title.split())}: " if doc.title else ""}

            def render(text: str, values: dict[str, Any] = values) -> str:
                return fill(self.template["item"], {**values, "text": text})

            items.append(Item(doc.id, " ".join(doc.text.split()), render))
        return fit_items(
            with_summary(self._assemble, summary),
            ranking.query.text,
            items,
            self.max_prompt_tokens,
            TokenCounter(self.llm),
            joiner=self.template.get("join", "\n"),
            min_item_tokens=self.min_item_tokens,
        )
