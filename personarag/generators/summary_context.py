"""The `summary` option of the LaMP and RAG generators: the query user's stored summary
(`personarag.personal.summaries`) at the head of the prompt, alone or with the retrieved items.

`summary=True` reads the summary of the generator's own kind (LaMP: the task, e.g. "LaMP-3";
RAG: "general"), a string reads that kind; False (default) uses none. The summaries come from
a user store: `store=PATH_OR_URL` (or a `UserStore`), or bound by `Pipeline.fit(store=...)`.
The summary is cut to `summary_tokens` tokens first; the prompt's token budget then counts it
like the input, so the retrieved items share what is left (`personarag.prompts.budget`).
A missing summary, or one made from an older history version than the user's current one,
is reported in the trace's problems (a stale one is still used).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from personarag.errors import InputError
from personarag.llm.stage import positive_int
from personarag.prompts import fill
from personarag.types import Ranking

#: the line put before the prompt; {summary} is the user's summary
SUMMARY_LINE = "About this user: {summary}\n"


def with_summary(assemble: Callable[[list[str], str], str], summary: str | None) -> Callable[[list[str], str], str]:
    """`assemble` (rendered items, input -> prompt) with the summary line at the head of the prompt."""
    if not summary:
        return assemble
    head = fill(SUMMARY_LINE, {"summary": " ".join(summary.split())})
    return lambda rendered, text: head + assemble(rendered, text)


class SummaryContext:
    """Mixin: `_init_summary` from the constructor, `fit`/`bind_store` for the pipeline,
    `_user_summary(ranking, kind)` per prompt."""

    def _init_summary(self, summary: bool | str, store: Any, summary_tokens: int) -> None:
        if not isinstance(summary, (bool, str)) or summary == "":
            raise InputError(f"summary must be True, False or a summary kind such as 'LaMP-3', got {summary!r}")
        self.summary = summary
        self.summary_tokens = positive_int("summary_tokens", summary_tokens)
        self._store_arg = store
        self._store: Any = None

    def fit(self, *, users: Any = None, store: Any = None) -> Any:
        """The pipeline's fitting hook: a generator with `summary` reads summaries from `store`;
        fitting on users (no store) works only without `summary`."""
        if store is not None:
            return self.bind_store(store)
        if self.summary is not False and self._store_arg is None and self._store is None:
            raise InputError("the generator's summary option reads summaries from a user store: give store=PATH "
                             "or fit the pipeline with Pipeline.fit(store=...), not users=")
        return self

    def config(self) -> dict[str, Any]:
        config = super().config()  # type: ignore[misc]
        store = self.params.get("store")  # type: ignore[attr-defined]
        if store is not None and hasattr(store, "url"):
            config["params"]["store"] = store.url  # a UserStore object: where it is (password masked)
        return config

    def bind_store(self, store: Any) -> Any:
        if not hasattr(store, "summaries"):
            from personarag.personal.store import UserStore

            store = UserStore(store)
        self._store = store
        return self

    @property
    def summary_store(self) -> Any:
        if self._store is None:
            if self._store_arg is None:
                raise InputError("the generator's summary option needs a user store: give store=PATH_OR_URL "
                                 "or fit the pipeline with Pipeline.fit(store=...)")
            self.bind_store(self._store_arg)
        return self._store

    def _summary_kind(self, default: str) -> str | None:
        if self.summary is False:
            return None
        return default if self.summary is True else str(self.summary)

    def _user_summaries(self, rankings: list[Ranking], kind: str | None) -> list[tuple[str | None, dict[str, Any], list[str]]]:
        """Per ranking: (summary text cut to summary_tokens or None, trace info, problems)."""
        if kind is None:
            return [(None, {}, []) for _ in rankings]
        store = self.summary_store
        users = [r.query.user.id if r.query.user is not None else None for r in rankings]
        ids = [u for u in users if u is not None]
        found = store.summaries(kind, ids)
        versions = store.history_versions(ids)
        out: list[tuple[str | None, dict[str, Any], list[str]]] = []
        for ranking, user_id in zip(rankings, users):
            if user_id is None:
                out.append((None, {}, [f"query {ranking.query.id!r} has no user: no summary"]))
                continue
            stored = found.get(user_id)
            if stored is None or not stored.text:
                out.append((None, {}, [f"no {kind} summary for user {user_id!r} in {store.url}"]))
                continue
            problems = []
            if user_id in versions and stored.history_version != versions[user_id]:
                problems.append(f"the {kind} summary of user {user_id!r} is stale (history version "
                                f"{stored.history_version}, now {versions[user_id]}): run `personarag users summarize`")
            text = self.llm.truncate(stored.text, self.summary_tokens)  # type: ignore[attr-defined]
            info = {"kind": kind, "history_version": stored.history_version, "fingerprint": stored.fingerprint,
                    "truncated": text != stored.text}
            out.append((text, info, problems))
        return out
