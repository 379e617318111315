"""Fitting retrieved items into a prompt under a token budget.

The rule (shared by the LaMP and RAG prompts):
1. The prompt without any item must fit; if it does not, the input itself is cut to fit
   and no item is used.
2. Items are taken in ranking order (best first). The lowest-ranked items are dropped
   until every remaining item can get at least `min_item_tokens`.
3. Each item in turn gets an equal share of what is left (what an earlier, shorter item
   did not use passes on to the later ones). Its fixed part (template, short fields such
   as a title or a score) must fit its share, else the item is dropped; its long field
   (review, abstract, description) is cut to the rest of the share.
4. Token counts of pieces do not add up exactly under subword tokenizers, so the whole
   prompt is counted at the end and the last items dropped while it is still over.

Tokens are counted with the LLM's `count_tokens` / `truncate` when an LLM is given, else
as whitespace-separated words.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from personarag.errors import InputError


class TokenCounter:
    """`count` and `truncate` from an LLM, or by whitespace-separated words."""

    def __init__(self, llm: Any = None) -> None:
        self.llm = llm

    def count(self, text: str) -> int:
        if not text:
            return 0
        return self.llm.count_tokens(text) if self.llm is not None else len(text.split())

    def truncate(self, text: str, max_tokens: int) -> str:
        if max_tokens <= 0:
            return ""
        if self.llm is not None:
            return self.llm.truncate(text, max_tokens)
        words = list(re.finditer(r"\S+", text))
        return text if len(words) <= max_tokens else text[: words[max_tokens - 1].end()]


@dataclass(frozen=True)
class Item:
    """One candidate: `render(long_text)` gives its prompt text with the long field filled in."""

    id: str
    long: str
    render: Callable[[str], str]


@dataclass(frozen=True)
class Fitted:
    text: str
    used: tuple[str, ...]  # item ids in the prompt, in order
    dropped: tuple[str, ...] = ()
    truncated: tuple[str, ...] = ()  # ids whose long field was cut
    input_truncated: bool = False
    tokens: int = 0
    problems: tuple[str, ...] = field(default=())


def fit_items(
    assemble: Callable[[list[str], str], str],
    input_text: str,
    items: Sequence[Item],
    max_tokens: int | None,
    counter: TokenCounter,
    *,
    joiner: str = "",
    min_item_tokens: int = 16,
) -> Fitted:
    """The prompt `assemble(rendered_items, input_text)` under `max_tokens`; see the module rule."""
    if max_tokens is None:
        text = assemble([item.render(item.long) for item in items], input_text)
        return Fitted(text, tuple(i.id for i in items), tokens=counter.count(text))
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise InputError(f"max_prompt_tokens must be a positive integer or None, got {max_tokens!r}")
    bare = assemble([], input_text)
    bare_tokens = counter.count(bare)
    if bare_tokens > max_tokens:
        room = max(1, max_tokens - (bare_tokens - counter.count(input_text)))
        cut = counter.truncate(input_text, room)
        text = assemble([], cut)
        problem = f"the input alone is {bare_tokens} tokens, over the {max_tokens}-token budget: input cut, no profile items used"
        return Fitted(text, (), tuple(i.id for i in items), (), True, counter.count(text), (problem,))
    if not items:
        return Fitted(bare, (), tokens=bare_tokens)
    # What one item costs beyond the item's own text: the template around the list and a joiner.
    overhead = counter.count(assemble(["x"], input_text)) - 1 - bare_tokens
    available = max_tokens - bare_tokens - max(0, overhead)
    joiner_tokens = counter.count(joiner)
    n = len(items)
    while n and available // n < min_item_tokens:
        n -= 1
    dropped = [i.id for i in items[n:]]
    rendered: list[str] = []
    used: list[str] = []
    truncated: list[str] = []
    remaining = available
    for position, item in enumerate(items[:n]):
        share = remaining // (n - position)
        fixed = counter.count(item.render("")) + (joiner_tokens if rendered else 0)
        room = share - fixed
        if room < 1:
            dropped.append(item.id)
            continue
        long = item.long
        if counter.count(long) > room:
            long = counter.truncate(long, room)
            truncated.append(item.id)
        piece = item.render(long)
        rendered.append(piece)
        used.append(item.id)
        remaining -= counter.count(piece) + (joiner_tokens if len(rendered) > 1 else 0)
    text = assemble(rendered, input_text)
    tokens = counter.count(text)
    while tokens > max_tokens and rendered:
        rendered.pop()
        dropped.append(used.pop())
        text = assemble(rendered, input_text)
        tokens = counter.count(text)
    truncated = [i for i in truncated if i in used]
    problems = (f"{len(dropped)} of {len(items)} items dropped to fit {max_tokens} tokens",) if dropped else ()
    return Fitted(text, tuple(used), tuple(dropped), tuple(truncated), False, tokens, problems)
