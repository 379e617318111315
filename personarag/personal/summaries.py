"""Offline, task-aware LLM summaries of each user's history, kept in the user store.

`summarize_users(store, llm, task="LaMP-3")` writes, for every user whose stored summary of
that kind is missing, was made from an older history version, or was written by something
else (another model, prompt or setting: a different `fingerprint`), one summary made by
`llm.generate` (greedy) from the task's template in `prompts/generation/summary.yaml`: the
user's history items, newest first, fitted to `max_prompt_tokens` by the rule of
`personarag.prompts.budget`. Everything else is left alone, so a rerun after a crash, or
after some histories changed, redoes exactly the users still to do; LLM calls go through the
LLM's cache. Each batch of users is written in one transaction with the history version of the
snapshot it was made from (a history that changes meanwhile makes the summary stale, and the
next run redoes it). An empty history gets an empty summary without an LLM call.

Readers: `UserStore.summary(user_id, kind)` (see `store_summaries`), and the `summary` option of
the LaMP and RAG generators, which puts it in their prompts.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from personarag.errors import InputError, require
from personarag.evaluation.qrels import is_number
from personarag.prompts.budget import Item, TokenCounter, fit_items
from personarag.llm.base import LLM, GenerationConfig
from personarag.personal.store_summaries import Summary
from personarag.prompts import fill, placeholders, read_yaml, shipped_file
from personarag.types import Document, User

logger = logging.getLogger(__name__)

GENERAL = "general"
_KEYS = {"item", "long", "join", "prompt", "max_new_tokens", "label", "stats"}


@dataclass(frozen=True)
class SummaryTemplate:
    kind: str
    item: str
    long: str
    join: str
    prompt: str
    max_new_tokens: int = 96
    label: str | None = None  # the item field holding the user's label (LaMP-2 tag, LaMP-3 score)
    stats: str | None = None  # a line of label counts ({counts}, {mean}) put before the model's text


@dataclass(frozen=True)
class SummaryReport:
    users: int  # users considered
    written: int  # summaries (re)written
    up_to_date: int  # left alone: made from the current history by the same fingerprint
    empty: int  # users with no history (empty summary, no LLM call)


def summary_kind(task: str | None) -> str:
    """The kind a task's summaries are stored under: the canonical task name, or "general"."""
    if task is None or task == GENERAL:
        return GENERAL
    from personarag.evaluation.lamp_tasks import get_task

    return get_task(task).name


def read_summary_templates(path: str | Path | None = None) -> dict[str, SummaryTemplate]:
    return dict(_read(str(path) if path is not None else None))


@lru_cache(maxsize=8)
def _read(path: str | None) -> tuple[tuple[str, SummaryTemplate], ...]:
    source = Path(path) if path is not None else shipped_file("generation/summary.yaml")
    data = read_yaml(source, "summary templates")
    if not isinstance(data, Mapping) or GENERAL not in data:
        raise InputError(f"{source}: expected a mapping kind -> template with a '{GENERAL}' entry")
    out = []
    for name, entry in data.items():
        kind = summary_kind(str(name))
        if not isinstance(entry, Mapping) or set(entry) - _KEYS or {"item", "long", "prompt"} - set(entry):
            raise InputError(f"{source}: {name}: a summary template needs item, long and prompt (allowed keys: {sorted(_KEYS)})")
        if "{history}" not in entry["prompt"]:
            raise InputError(f"{source}: {name}: the prompt has no {{history}} placeholder")
        if ("label" in entry) != ("stats" in entry):
            raise InputError(f"{source}: {name}: 'label' and 'stats' go together (the field counted and the line showing the counts)")
        out.append((kind, SummaryTemplate(kind, entry["item"], entry["long"], entry.get("join", "\n"), entry["prompt"],
                                          int(entry.get("max_new_tokens", 96)), entry.get("label"), entry.get("stats"))))
    return tuple(out)


class Summarizer:
    """Builds summary prompts for one kind and reads the model's summaries (see the module docstring)."""

    def __init__(
        self,
        llm: LLM,
        task: str | None = None,
        *,
        max_prompt_tokens: int = 1024,
        max_items: int = 50,
        max_new_tokens: int | None = None,
        templates: str | Path | None = None,
        label_stats: bool = False,
    ) -> None:
        """`label_stats`: for templates with a `stats` line (LaMP-2, LaMP-3), begin the summary with
        the counts of the user's labels over the whole history, computed exactly (small models
        miscount them). Off by default: with SmolLM2-135M it did not help (LaMP-3 MAE 1.125 with
        the counts vs 0.70 without, benchmarks/results/lamp_calibration.md)."""
        if not isinstance(llm, LLM):
            raise InputError(f"Summarizer needs an LLM object, got {type(llm).__name__}")
        for name, value in (("max_prompt_tokens", max_prompt_tokens), ("max_items", max_items)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        self.llm = llm
        self.kind = summary_kind(task)
        table = read_summary_templates(templates)
        self.template = table.get(self.kind, table[GENERAL])
        self.max_prompt_tokens, self.max_items = max_prompt_tokens, max_items
        self.label_stats = bool(label_stats) and self.template.stats is not None
        self.config = GenerationConfig(max_new_tokens=max_new_tokens or self.template.max_new_tokens, temperature=0.0)
        self.counter = TokenCounter(llm)

    @property
    def fingerprint(self) -> str:
        """`MODEL@HASH`: the model name and a hash of what else shapes a summary (backend settings,
        template, budgets, generation settings). A summary with another fingerprint is redone."""
        settings = {"backend": self.llm.spec_name or type(self.llm).__name__, "model": self.llm.model_name,
                    "extra": self.llm.extra_key(), "template": self.template.__dict__, "max_prompt_tokens": self.max_prompt_tokens,
                    "max_items": self.max_items, "max_new_tokens": self.config.max_new_tokens, "label_stats": self.label_stats}
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return f"{self.llm.model_name}@{digest}"

    def _values(self, doc: Document) -> dict[str, str]:
        values = {k: " ".join(str(v).split()) for k, v in doc.meta.items() if isinstance(v, (str, int, float))}
        values.setdefault("text", " ".join(doc.text.split()))
        values.setdefault("title", " ".join((doc.title or "").split()))
        values["title_prefix"] = f"{values['title']}: " if values["title"] else ""
        values.setdefault(self.template.long, values["text"])
        missing = [n for n in placeholders(self.template.item) if n not in values]
        if missing:
            raise InputError(f"history item {doc.id!r} has no {', '.join(missing)} for the {self.kind} summary item "
                             f"template {self.template.item!r} (fields: {sorted(values)})")
        return values

    def prompt(self, user: User) -> str:
        """The summary prompt of `user`'s history (newest first, at most `max_items` items, under the budget)."""
        items = []
        for doc in user.history[: self.max_items]:
            values = self._values(doc)

            def render(long: str, values: dict[str, str] = values) -> str:
                return fill(self.template.item, {**values, self.template.long: long})

            items.append(Item(doc.id, values[self.template.long], render))

        def assemble(rendered: list[str], _input: str) -> str:
            return fill(self.template.prompt, {"history": self.template.join.join(rendered)})

        return fit_items(assemble, "", items, self.max_prompt_tokens, self.counter, joiner=self.template.join).text

    def stats(self, user: User) -> str:
        """The template's `stats` line for the user's labels (most frequent first), or "" when none."""
        if not self.label_stats or self.template.label is None or self.template.stats is None:
            return ""
        labels = [str(d.meta[self.template.label]).strip() for d in user.history if d.meta.get(self.template.label) is not None]
        if not labels:
            return ""
        counts = Counter(labels).most_common()
        numbers = [float(x) for x in labels if is_number(x)]
        mean = f"{sum(numbers) / len(numbers):.1f}" if len(numbers) == len(labels) else "n/a"
        return fill(self.template.stats, {"counts": ", ".join(f"{label} ({n})" for label, n in counts), "mean": mean})

    def summarize(self, users: list[tuple[User, int]]) -> list[Summary]:
        """One summary per (user, history version), in order (one batched `generate` call)."""
        todo = [(u, v) for u, v in users if u.history]
        completions = self.llm.generate([self.prompt(u) for u, _ in todo], self.config) if todo else []
        texts = {u.id: " ".join(f"{self.stats(u)} {c.text}".split()) for (u, _), c in zip(todo, completions)}
        fingerprint = self.fingerprint
        return [Summary(u.id, self.kind, texts.get(u.id, ""), v, fingerprint) for u, v in users]


def summarize_users(
    store: Any,
    llm: LLM,
    task: str | None = None,
    *,
    user_ids: Iterable[str] | None = None,
    batch_size: int = 8,
    force: bool = False,
    progress: bool | None = None,
    **options: Any,
) -> SummaryReport:
    """(Re)write the summaries of kind `summary_kind(task)` that are missing, stale or from another
    fingerprint (`force`: all of them); see the module docstring. `options`: `Summarizer` options."""
    tqdm = require("tqdm", "llm").tqdm
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    summarizer = Summarizer(llm, task, **options)
    ids = store.user_ids() if user_ids is None else list(dict.fromkeys(user_ids))
    versions = store.history_versions(ids)
    unknown = [i for i in ids if i not in versions]
    if unknown:
        raise InputError(f"summarize_users: unknown user(s) {unknown[:5]} in {store.url}")
    stored = store.summaries(summarizer.kind, ids)
    fingerprint = summarizer.fingerprint
    todo = [i for i in ids if force or i not in stored or stored[i].history_version != versions[i]
            or stored[i].fingerprint != fingerprint]
    written = empty = 0
    bar = tqdm(total=len(todo), desc=f"summaries {summarizer.kind}", unit="user", disable=(not progress) if progress is not None else None)
    try:
        for start in range(0, len(todo), batch_size):
            batch = [store.user_and_version(i) for i in todo[start:start + batch_size]]
            summaries = summarizer.summarize(batch)
            store.put_summaries(summaries)
            written += len(summaries)
            empty += sum(1 for user, _ in batch if not user.history)
            bar.update(len(batch))
    finally:
        bar.close()
    logger.info("summaries %s: %d written, %d up to date", summarizer.kind, written, len(ids) - len(todo))
    return SummaryReport(len(ids), written, len(ids) - len(todo), empty)
