"""Floors: LaMP answers made without an LLM, as generators, so they run in the same pipelines,
CLI and tables as the LLM generators and show what an LLM row has to beat.

- `majority`: the most frequent label of the split. It is fitted on the **profile labels**
  of the split's users (`fit_users`, which the LaMP runner calls with the whole split's users),
  never on gold outputs, so no example's own gold leaks into its answer and it works on an
  unlabelled split too. `label=` fixes the answer instead (LaMP-1, whose profile items carry
  no label, needs it).
- `user-majority`: the most frequent label in the query user's whole history;
  `user-mean`: the rounded mean of the user's history ratings (LaMP-3 only).
- `knn`: a vote of the retrieved items' labels weighted by 1/rank (`weighting="uniform"`:
  equal weights): the weighted mode for LaMP-2, the rounded weighted mean for LaMP-3
  (`vote="mode"` for the mode). For the generation tasks (LaMP-4..7) it copies the top
  retrieved item's output field (its title; LaMP-7: its text).

Labels per task (what a profile item carries, `lamp_tasks.TASKS`): LaMP-2 `tag`, LaMP-3
`score`; LaMP-1 items (title, abstract) and LaMP-4..7 items carry no label of the answer
space, so the label floors refuse those tasks with an InputError. Ties go to the label more
frequent in the split (when fitted), then to the one listed first in the task's label set.
Ratings round half up (3.5 -> 4). A floor with nothing to vote on (empty history, nothing
retrieved) falls back to the user's labels, then to the split's majority, and says so in
the trace's problems.

The task is `task=` or, when that is None, each query's `meta["task"]` (set by the LaMP
loader); both given and different is an InputError.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from personarag.errors import InputError
from personarag.evaluation.lamp_tasks import get_task
from personarag.generators.base import Generator
from personarag.types import Document, Output, Ranking, ScoredDoc, StageTrace, User

#: the profile field holding an item's label, for the tasks whose profile items have one
LABEL_FIELD = {"LaMP-2": "tag", "LaMP-3": "score"}
#: the profile field that is an item's "output", for the generation tasks
OUTPUT_FIELD = {"LaMP-4": "title", "LaMP-5": "title", "LaMP-6": "title", "LaMP-7": "text"}


def query_task(ranking: Ranking, task: str | None, where: str) -> str:
    """The task of one query: `task` when given, else `meta["task"]`; InputError when they differ or neither is there."""
    meta = ranking.query.meta.get("task") if ranking.query.meta else None
    found = get_task(meta).name if meta else None
    if task is not None and found is not None and found != task:
        raise InputError(f"{where} is set up for {task}, but query {ranking.query.id!r} is a {found} example (meta['task'])")
    if task is None and found is None:
        raise InputError(f"{where}: no task for query {ranking.query.id!r}: give task= or queries with meta['task'] (the LaMP loader sets it)")
    return task or found  # type: ignore[return-value]


def item_label(task: str, doc: Document) -> str | None:
    """The label a profile item carries in the task's answer space, or None (missing, or not a label)."""
    value = doc.meta.get(LABEL_FIELD[task]) if doc.meta else None
    if value is None or isinstance(value, bool):
        return None
    if task == "LaMP-3":
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None
        return str(int(number)) if number.is_integer() and 1 <= number <= 5 else None
    text = str(value).strip()
    return text if text in get_task(task).labels else None


def round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


class FloorGenerator(Generator):
    """Base of the floors: the task, the split's label counts (`fit_users`), one answer per ranking."""

    spec_name: ClassVar[str] = ""
    #: tasks the floor answers (LaMP names)
    tasks: ClassVar[tuple[str, ...]] = ("LaMP-2", "LaMP-3")

    def __init__(self, task: str | None = None) -> None:
        self.task = None if task is None else get_task(task).name
        if self.task is not None:
            self._check_task(self.task)
        self._split: Counter[str] = Counter()
        self._split_task: str | None = None

    def _check_task(self, task: str) -> None:
        if task not in self.tasks:
            why = ("its profile items carry no label of the answer space" if task not in OUTPUT_FIELD
                   else "it is a generation task")
            raise InputError(
                f"{self.spec_name!r} floor does not apply to {task}: {why}; it answers {', '.join(self.tasks)}"
                + ("; for generation tasks use 'knn' (the top retrieved item's title)" if task in OUTPUT_FIELD else "")
            )

    def fit_users(self, users: Iterable[User]) -> FloorGenerator:
        """Count the profile labels of `users` (the split's users): the majority and the tie-break order."""
        users = list(users)
        task = self.task or _users_task(users)
        self._split = Counter()
        self._split_task = task
        if task in LABEL_FIELD:
            for user in users:
                self._split.update(label for label in (item_label(task, d) for d in user.history) if label is not None)
        return self

    def _pick(self, task: str, weights: dict[str, float]) -> str:
        """The label with the largest weight; ties by split frequency, then the task's label order."""
        order = get_task(task).labels
        split = self._split if self._split_task == task else Counter()
        return max(weights, key=lambda label: (weights[label], split[label], -order.index(label)))

    def _split_majority(self, task: str, where: str) -> str:
        if self._split_task != task or not self._split:
            raise InputError(
                f"{where}: the split's majority is unknown: call fit_users(users) with the split's users "
                "(the LaMP runner does), or give label="
            )
        return self._pick(task, {label: float(n) for label, n in self._split.items()})

    def _user_majority(self, task: str, user: User | None, where: str, problems: list[str]) -> str:
        labels = [label for label in (item_label(task, d) for d in (user.history if user else ())) if label is not None]
        if not labels:
            problems.append("the user's history has no labels: answered the split's majority")
            return self._split_majority(task, where)
        return self._pick(task, {label: float(n) for label, n in Counter(labels).items()})

    def _generate(self, rankings: list[Ranking]) -> list[Output]:
        outputs = []
        for ranking in rankings:
            task = query_task(ranking, self.task, f"the {self.spec_name!r} floor")
            self._check_task(task)
            problems: list[str] = []
            text, context, info = self._answer(task, ranking, problems)
            trace = StageTrace(stage=self.spec_name, problems=tuple(problems), info={"floor": self.spec_name, **info})
            outputs.append(Output(query=ranking.query, text=text, context=tuple(context), trace=ranking.trace + (trace,)))
        return outputs

    def _answer(self, task: str, ranking: Ranking, problems: list[str]) -> tuple[str, Sequence[ScoredDoc], dict[str, Any]]:
        raise NotImplementedError


def _users_task(users: Sequence[User]) -> str | None:
    """The task the users' items belong to, judged from the fields they carry (None: no labelled items)."""
    for user in users:
        for doc in user.history:
            if doc.meta and "tag" in doc.meta:
                return "LaMP-2"
            if doc.meta and "score" in doc.meta:
                return "LaMP-3"
    return None


class MajorityGenerator(FloorGenerator):
    """Always the split's most frequent profile label (or `label`); see the module docstring."""

    spec_name = "majority"
    tasks = ("LaMP-1", "LaMP-2", "LaMP-3")

    def __init__(self, task: str | None = None, *, label: str | None = None) -> None:
        super().__init__(task)
        if label is not None and self.task is not None and label not in get_task(self.task).labels:
            raise InputError(f"label {label!r} is not a {self.task} label; valid: {', '.join(get_task(self.task).labels)}")
        self.label = label

    def _answer(self, task: str, ranking: Ranking, problems: list[str]) -> tuple[str, Sequence[ScoredDoc], dict[str, Any]]:
        if self.label is not None:
            if self.label not in get_task(task).labels:
                raise InputError(f"label {self.label!r} is not a {task} label; valid: {', '.join(get_task(task).labels)}")
            return self.label, (), {}
        if task not in LABEL_FIELD:
            raise InputError(f"'majority' on {task}: its profile items carry no label, so give label= (e.g. label='[1]')")
        return self._split_majority(task, "the 'majority' floor"), (), {"split_labels": sum(self._split.values())}


class UserMajorityGenerator(FloorGenerator):
    """The most frequent label in the query user's whole history (LaMP-2, LaMP-3)."""

    spec_name = "user-majority"

    def _answer(self, task: str, ranking: Ranking, problems: list[str]) -> tuple[str, Sequence[ScoredDoc], dict[str, Any]]:
        user = ranking.query.user
        return self._user_majority(task, user, "the 'user-majority' floor", problems), (), {"history": len(user.history) if user else 0}


class UserMeanGenerator(FloorGenerator):
    """The user's mean history rating, rounded half up (LaMP-3)."""

    spec_name = "user-mean"
    tasks = ("LaMP-3",)

    def _answer(self, task: str, ranking: Ranking, problems: list[str]) -> tuple[str, Sequence[ScoredDoc], dict[str, Any]]:
        user = ranking.query.user
        ratings = [int(label) for label in (item_label(task, d) for d in (user.history if user else ())) if label is not None]
        if not ratings:
            problems.append("the user's history has no ratings: answered the split's majority")
            return self._split_majority(task, "the 'user-mean' floor"), (), {}
        mean = sum(ratings) / len(ratings)
        return str(round_half_up(mean)), (), {"mean": mean}


class KnnGenerator(FloorGenerator):
    """A vote of the retrieved items' labels weighted by rank; for generation tasks the top item's output field."""

    spec_name = "knn"
    tasks = ("LaMP-2", "LaMP-3", "LaMP-4", "LaMP-5", "LaMP-6", "LaMP-7")

    def __init__(self, task: str | None = None, *, vote: str = "auto", weighting: str = "rank") -> None:
        if vote not in ("auto", "mode", "mean"):
            raise InputError(f"vote must be 'auto', 'mode' or 'mean', got {vote!r}")
        if weighting not in ("rank", "uniform"):
            raise InputError(f"weighting must be 'rank' (1/rank) or 'uniform', got {weighting!r}")
        super().__init__(task)
        if vote == "mean" and self.task not in (None, "LaMP-3"):
            raise InputError(f"vote='mean' needs ratings (LaMP-3), not {self.task}")
        self.vote = vote
        self.weighting = weighting

    def _answer(self, task: str, ranking: Ranking, problems: list[str]) -> tuple[str, Sequence[ScoredDoc], dict[str, Any]]:
        if task in OUTPUT_FIELD:
            return self._copy_top(task, ranking, problems)
        voters = [(rank, d, label) for rank, d in enumerate(ranking.docs, 1) if (label := item_label(task, d.doc)) is not None]
        if not voters:
            problems.append("no retrieved item carries a label: answered the user's majority")
            return self._user_majority(task, ranking.query.user, "the 'knn' floor", problems), (), {"voters": 0}
        weights = [1.0 / rank if self.weighting == "rank" else 1.0 for rank, _, _ in voters]
        context = [d for _, d, _ in voters]
        vote = self.vote if self.vote != "auto" else ("mean" if task == "LaMP-3" else "mode")
        if vote == "mean":
            if task != "LaMP-3":
                raise InputError(f"vote='mean' needs ratings (LaMP-3), not {task}")
            mean = sum(w * int(label) for w, (_, _, label) in zip(weights, voters)) / sum(weights)
            return str(round_half_up(mean)), context, {"voters": len(voters), "mean": mean}
        totals: dict[str, float] = {}
        for w, (_, _, label) in zip(weights, voters):
            totals[label] = totals.get(label, 0.0) + w
        return self._pick(task, totals), context, {"voters": len(voters), "votes": totals}

    def _copy_top(self, task: str, ranking: Ranking, problems: list[str]) -> tuple[str, Sequence[ScoredDoc], dict[str, Any]]:
        field = OUTPUT_FIELD[task]
        for d in ranking.docs:
            value = d.doc.meta.get(field) if d.doc.meta else None
            if isinstance(value, str) and value.strip():
                return value.strip(), (d,), {"copied": d.doc.id}
        problems.append(f"no retrieved item has a {field!r}: answered an empty output")
        return "", (), {"copied": None}
