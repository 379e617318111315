"""A personalized cross-encoder reranker (CFRAG's reranker side): the model reads
(user context + query, candidate) pairs, so the same query and candidates can be ordered
differently for two users.

The user context is, by default, the user's own history items most similar to the query
(`TopHistoryContext`: word overlap, each item shown with the label fields asked for, e.g.
LaMP-3's `score`), or the user's stored summary when a `summary(user_id)` function is given
and has one for that user (`summary_context`). Any `context(query) -> str` can replace it.
The user's history comes from the bound user store (`fit(store=...)`, as `Pipeline.fit`
does), else from the users given to `fit(users=...)`, else from `query.user`.

The pair is ("[user] " + context + " [query] " + `query.text`, candidate text): the context comes
first, so when a pair is longer than `max_length` the tokenizer cuts the query's tail, never the
user (with the query first, a LaMP-3 review alone filled 256 tokens and the context was cut away).

A folder trained by `personarag train llm-feedback --target personalized-reranker` holds
`personal_reranker.json` (context items, max length, fields); its values are the defaults
here, explicit arguments win. Spec: `personal-cross-encoder:PATH`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from personarag.errors import InputError
from personarag.rerankers.cross_encoder import CrossEncoderReranker
from personarag.types import Document, Query, Ranking, User

CONFIG_FILE = "personal_reranker.json"
USER, QUERY = "[user] ", " [query] "
DEFAULTS = {"context_items": 3, "max_length": 256, "fields": (), "item_chars": 300, "candidate_chars": None}
_WORD = re.compile(r"\w+")

ContextFn = Callable[[Query], str]


def item_line(doc: Document, fields: Sequence[str], item_chars: int) -> str:
    """One history item as the model sees it: its label fields first (`score: 5`), then its text cut to `item_chars`."""
    labels = [f"{name}: {doc.meta[name]}" for name in fields if doc.meta and doc.meta.get(name) is not None]
    text = doc.full_text[:item_chars]
    return " | ".join(labels + [text]) if labels else text


def candidate_text(doc: Document, fields: Sequence[str], chars: int | None = None) -> str:
    """The candidate side of a pair: the document (its first `chars` characters; None: all) with the
    same label fields as the context items."""
    return item_line(doc, fields, len(doc.full_text) if chars is None else chars)


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def most_similar(query: str, history: Sequence[Document], k: int) -> list[Document]:
    """The `k` history items with the highest word-set cosine to `query` (ties: history order)."""
    words = _words(query)
    scores = []
    for doc in history:
        item = _words(doc.full_text)
        overlap = len(words & item)
        scores.append(overlap / math.sqrt(len(words) * len(item)) if words and item else 0.0)
    order = sorted(range(len(history)), key=lambda i: -scores[i])
    return [history[i] for i in order[:k]]


class TopHistoryContext:
    """The user's `items` history items most similar to the query, one per line, with `fields` shown."""

    def __init__(self, history: Callable[[Query], Sequence[Document]], items: int, fields: Sequence[str] = (),
                 item_chars: int = 300) -> None:
        self.history, self.items, self.fields, self.item_chars = history, items, tuple(fields), item_chars

    def __call__(self, query: Query) -> str:
        chosen = most_similar(query.text, self.history(query), self.items)
        return "\n".join(item_line(d, self.fields, self.item_chars) for d in chosen)


def summary_context(summary: Callable[[str], str | None], fallback: ContextFn) -> ContextFn:
    """The user's summary (`summary(user_id)`, e.g. `lambda u: store.summary(u, "lamp3")`) when it has one, else `fallback`."""

    def context(query: Query) -> str:
        text = summary(query.user.id) if query.user is not None else None
        return text if text else fallback(query)

    return context


def read_folder_config(model: str) -> dict[str, Any]:
    """The context options saved beside a trained model, or {} for any other model (a hub name, a base encoder)."""
    path = Path(model) / CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error}); expected the options a personalized reranker was trained with") from error
    unknown = sorted(set(saved) - set(DEFAULTS))
    if unknown:
        raise InputError(f"{path}: unknown options {unknown}; expected some of {sorted(DEFAULTS)}")
    return saved


class PersonalCrossEncoderReranker(CrossEncoderReranker):
    """`model`: a folder trained by `personarag.training.personal_reranker`, or any cross-encoder / encoder.

    `context_items`: history items in the default context; `fields`: the item meta fields shown
    with each item and candidate (LaMP-3: `("score",)`); `item_chars`: characters kept per context
    item; `candidate_chars`: characters kept per candidate (None: all; a short candidate leaves the
    tokens of `max_length` to the context and the query); `context`: a function replacing the
    default context; `summary`: `summary(user_id) -> str | None` used instead of the items when it
    returns text; `summary_kind`: instead of `summary`, the bound store's summary of that kind (e.g.
    "LaMP-3", written by `personarag users summarize`) when it was made from the user's current
    history (a stale one is not used). None means: the trained folder's value, else the default (3 items, 256 tokens,
    no fields, 300 characters per item, whole candidates).
    """

    spec_name = "personal-cross-encoder"

    def __init__(
        self,
        model: str,
        *,
        context_items: int | None = None,
        max_length: int | None = None,
        fields: Sequence[str] | None = None,
        item_chars: int | None = None,
        candidate_chars: int | None = None,
        context: ContextFn | None = None,
        summary: Callable[[str], str | None] | None = None,
        summary_kind: str | None = None,
        batch_size: int = 32,
        device: str | None = None,
        activation: str = "default",
        show_progress_bar: bool | None = None,
        first_stage_weight: float = 0.0,
        depth: int | None = None,
    ) -> None:
        saved = read_folder_config(model) if isinstance(model, str) and model.strip() else {}
        options = {**DEFAULTS, **saved}
        given = {"context_items": context_items, "max_length": max_length, "item_chars": item_chars, "candidate_chars": candidate_chars}
        options.update({name: value for name, value in given.items() if value is not None})
        for name, least in (("context_items", 0), ("max_length", 1), ("item_chars", 1), ("candidate_chars", 1)):
            value = options[name]
            if name == "candidate_chars" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise InputError(f"{name} must be an integer >= {least}{' or None' if name == 'candidate_chars' else ''}, got {value!r}")
        if fields is not None:
            options["fields"] = fields
        if isinstance(options["fields"], str) or not all(isinstance(f, str) for f in options["fields"]):
            raise InputError(f"fields must be a list of item meta field names, got {options['fields']!r}")
        super().__init__(model, batch_size=batch_size, max_length=options["max_length"], device=device, activation=activation,
                         show_progress_bar=show_progress_bar, first_stage_weight=first_stage_weight, depth=depth)
        self.context_items, self.item_chars = options["context_items"], options["item_chars"]
        self.candidate_chars = options["candidate_chars"]
        self.fields = tuple(options["fields"])
        self._users: dict[str, User] | None = None
        self._store: Any = None
        if summary is not None and summary_kind is not None:
            raise InputError("give summary (a function) or summary_kind (the bound store's summaries), not both")
        self.summary_kind = summary_kind
        if summary_kind is not None:
            summary = self.stored_summary
        default = TopHistoryContext(self.history, self.context_items, self.fields, self.item_chars)
        self.context = context or (summary_context(summary, default) if summary is not None else default)

    def fit(self, *, users: Iterable[User] | None = None, store: Any = None) -> PersonalCrossEncoderReranker:
        """The pipeline's fitting hook: take histories from `store` (a UserStore, path or URL) or from `users`."""
        if (users is None) == (store is None):
            raise InputError("fit takes exactly one of users= (User objects) or store= (a UserStore, path or URL)")
        if store is not None:
            if not hasattr(store, "user"):
                from personarag.personal.store import UserStore

                store = UserStore(store)
            self._store, self._users = store, None
        else:
            self._users, self._store = {u.id: u for u in users}, None  # type: ignore[union-attr]
        return self

    def history(self, query: Query) -> Sequence[Document]:
        """The query user's history: from the bound store, the fitted users, or `query.user`."""
        if query.user is None:
            raise InputError(f"query {query.id!r} has no user; the personalized reranker needs one for its context")
        if self._store is not None and self._store.has_user(query.user.id):
            return self._store.user(query.user.id).history
        if self._users is not None and query.user.id in self._users:
            return self._users[query.user.id].history
        return query.user.history

    def stored_summary(self, user_id: str) -> str | None:
        """The bound store's `summary_kind` summary of the user, when one was made from their current history."""
        if self._store is None or not self._store.has_user(user_id):
            return None
        found = self._store.summary(user_id, self.summary_kind)
        if found is None or found.history_version != self._store.history_version(user_id):
            return None
        return found.text or None

    def pair_query(self, query: Query) -> str:
        """The first text of every pair of `query`: the user context, then the query."""
        return USER + self.context(query) + QUERY + query.text

    def _pairs(self, rankings: list[Ranking]) -> list[tuple[str, str]]:
        pairs = []
        for ranking in rankings:
            first = self.pair_query(ranking.query) if ranking.docs else ""
            pairs.extend((first, candidate_text(s.doc, self.fields, self.candidate_chars)) for s in ranking.docs)
        return pairs

    def _info(self, ranking: Ranking) -> dict[str, Any]:
        return {"model": self.model_name, "user": ranking.query.user.id if ranking.query.user else None}
