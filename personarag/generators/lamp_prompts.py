"""LaMP prompts: the input plus the retrieved profile items, rendered per task, under a budget.

The templates are data (`personarag/prompts/generation/lamp.yaml`); `LampPromptBuilder`
fills them. Item values have their whitespace collapsed. The token budget follows
`personarag.prompts.budget` (items in ranking order, equal shares, the task's long field
cut first, the lowest-ranked items dropped first).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from personarag.errors import InputError
from personarag.evaluation.lamp_tasks import LampTask, get_task
from personarag.prompts.budget import Fitted, Item, TokenCounter, fit_items
from personarag.generators.summary_context import with_summary
from personarag.prompts import fill, placeholders, read_yaml, shipped_file
from personarag.types import Document

_KEYS = {"content", "item", "long", "join", "with_profile", "without_profile", "instruction", "insert_after", "insert", "max_new_tokens"}


def _flat(value: Any) -> str:
    return " ".join(str(value).split())


@dataclass(frozen=True)
class LampTemplate:
    task: str
    item: str
    long: str
    join: str
    with_profile: str
    without_profile: str
    instruction: str
    insert_after: str | None = None
    insert: str | None = None
    max_new_tokens: int = 32
    content: str | None = None  # regex whose group 1 is the example's content within the input


def read_templates(path: str | Path | None = None) -> dict[str, LampTemplate]:
    """Task name -> template, from the shipped YAML or a file with the same keys."""
    return dict(_read_templates(str(path) if path is not None else None))


@lru_cache(maxsize=8)
def _read_templates(path: str | None) -> tuple[tuple[str, LampTemplate], ...]:
    source = Path(path) if path is not None else shipped_file("generation/lamp.yaml")
    data = read_yaml(source, "LaMP templates")
    if not isinstance(data, Mapping):
        raise InputError(f"{source}: expected a mapping task -> template, got {type(data).__name__}")
    out = []
    for name, entry in data.items():
        task = get_task(str(name)).name
        if not isinstance(entry, Mapping):
            raise InputError(f"{source}: {name}: expected a mapping, got {type(entry).__name__}")
        unknown = set(entry) - _KEYS
        missing = {"item", "long", "with_profile", "without_profile"} - set(entry)
        if unknown or missing:
            raise InputError(f"{source}: {name}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
        out.append((task, LampTemplate(
            task=task,
            item=entry["item"],
            long=entry["long"],
            join=entry.get("join", ", "),
            with_profile=entry["with_profile"],
            without_profile=entry["without_profile"],
            instruction=entry.get("instruction", ""),
            insert_after=entry.get("insert_after"),
            insert=entry.get("insert"),
            max_new_tokens=int(entry.get("max_new_tokens", 32)),
            content=_regex(entry.get("content"), f"{source}: {name}: content"),
        )))
    return tuple(out)


def _regex(pattern: Any, where: str) -> str | None:
    if pattern is None:
        return None
    try:
        compiled = re.compile(str(pattern), re.DOTALL)
    except re.error as error:
        raise InputError(f"{where}: {pattern!r} is not a regular expression: {error}") from None
    if compiled.groups < 1:
        raise InputError(f"{where}: {pattern!r} needs a group around the content, e.g. 'review: (.*)$'")
    return str(pattern)


class LampPromptBuilder:
    """Builds one task's prompts.

    `max_prompt_tokens`: budget of the whole prompt (None: no limit). `llm`: counts and cuts
    tokens with its tokenizer (None: whitespace words). `min_item_tokens`: the smallest share
    a profile item is given before lower-ranked items are dropped. `templates`: a YAML path
    replacing the shipped templates.
    """

    def __init__(
        self,
        task: str | LampTask,
        max_prompt_tokens: int | None = None,
        llm: Any = None,
        *,
        min_item_tokens: int = 16,
        templates: str | Path | None = None,
    ) -> None:
        self.task = get_task(task)
        table = read_templates(templates)
        if self.task.name not in table:
            raise InputError(f"no LaMP template for {self.task.name} in {templates or 'the shipped templates'}")
        self.template = table[self.task.name]
        self.max_prompt_tokens = max_prompt_tokens
        self.counter = TokenCounter(llm)
        self.min_item_tokens = min_item_tokens
        self.instruction = fill(self.template.instruction, {"labels": ", ".join(self.task.labels)})

    def item_values(self, doc: Document) -> dict[str, str]:
        """The fields an item template can use: the profile item's fields, text and title."""
        values = {k: _flat(v) for k, v in doc.meta.items() if isinstance(v, (str, int, float))}
        values.setdefault("text", _flat(doc.text))
        if doc.title is not None:
            values.setdefault("title", _flat(doc.title))
        if self.template.long not in values:
            values[self.template.long] = _flat(doc.text)  # a document from elsewhere: its text is the long field
        missing = [name for name in placeholders(self.template.item) if name not in values]
        if missing:
            raise InputError(
                f"profile item {doc.id!r} has no {', '.join(missing)} for the {self.task.name} item template "
                f"{self.template.item!r} (fields: {sorted(values)})"
            )
        return values

    def _assemble(self, items: list[str], input_text: str) -> str:
        t = self.template
        if not items:
            return fill(t.without_profile, {"input": input_text, "instruction": self.instruction})
        profile = t.join.join(items)
        if t.insert_after:
            match = re.search(t.insert_after, input_text)
            if match:
                inserted = fill(t.insert or ", {profile}", {"profile": profile})
                joined = input_text[: match.end()] + inserted + input_text[match.end():]
                return fill(t.with_profile, {"input": joined, "instruction": self.instruction, "profile": ""})
            # An input without the expected title: fall back to the list before the input.
            return fill("{profile}. {input}\n{instruction}", {"input": input_text, "instruction": self.instruction, "profile": profile})
        return fill(t.with_profile, {"input": input_text, "instruction": self.instruction, "profile": profile})

    def content_free(self, input_text: str, filler: str) -> str:
        """The prompt of `input_text` with its content (the template's `content` group; the whole
        input when the template has none or it does not match) replaced by `filler`, without profile
        items: the content-free input of contextual calibration."""
        match = re.search(self.template.content, input_text, re.DOTALL) if self.template.content else None
        text = input_text[: match.start(1)] + filler + input_text[match.end(1):] if match else filler
        return self._assemble([], text)

    def build(self, input_text: str, docs: Sequence[Document], *, summary: str | None = None) -> Fitted:
        """The prompt for `input_text` with `docs` (best first) as the profile items, and the
        user's `summary` (already cut to its share) at its head, counted in the budget."""
        items = []
        for doc in docs:
            values = self.item_values(doc)

            def render(long: str, values: dict[str, str] = values) -> str:
                return fill(self.template.item, {**values, self.template.long: long})

            items.append(Item(doc.id, values[self.template.long], render))
        return fit_items(
            with_summary(self._assemble, summary),
            input_text,
            items,
            self.max_prompt_tokens,
            self.counter,
            joiner=self.template.join,
            min_item_tokens=self.min_item_tokens,
        )
