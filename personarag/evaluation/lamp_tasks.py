"""The seven LaMP tasks: names, profile fields, label sets, metric kinds and official file URLs.

One table that the loader, the prompts and the metrics all read, so that a task's
facts live in one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from personarag.errors import UnknownSpecError

BASE_URL = "https://ciir.cs.umass.edu/downloads/LaMP"
SPLITS = ("train", "dev", "test")
SPLIT_KINDS = ("user", "time")


@dataclass(frozen=True)
class LampTask:
    name: str  # "LaMP-3"
    title: str
    kind: str  # "classification" | "rating" | "generation"
    profile_fields: tuple[str, ...]  # fields every profile item must carry, besides "id"
    #: the free-text field that prompts truncate first when over budget (None: none to cut)
    long_field: str | None
    labels: tuple[str, ...] = ()
    #: path of the task's folder under BASE_URL (LaMP-2 movie tagging lives under "new/")
    url_dir: str = ""
    downloadable: bool = True

    @property
    def number(self) -> int:
        return int(self.name.split("-")[1])

    def file_url(self, split: str, part: str, split_kind: str = "user") -> str:
        """Official URL of `{split}_{part}.json` (part: "questions" | "outputs")."""
        prefix = f"{BASE_URL}/time" if split_kind == "time" else BASE_URL
        return f"{prefix}/{self.url_dir}/{split}/{split}_{part}.json"


LAMP2_TAGS = (
    "sci-fi",
    "based on a book",
    "comedy",
    "action",
    "twist ending",
    "dystopia",
    "dark comedy",
    "classic",
    "psychology",
    "fantasy",
    "romance",
    "thought-provoking",
    "social commentary",
    "violence",
    "true story",
)

TASKS: dict[str, LampTask] = {
    task.name: task
    for task in (
        LampTask("LaMP-1", "personalized citation identification", "classification", ("title", "abstract"),
                 "abstract", labels=("[1]", "[2]"), url_dir="LaMP_1"),
        LampTask("LaMP-2", "personalized movie tagging", "classification", ("description", "tag"),
                 "description", labels=LAMP2_TAGS, url_dir="LaMP_2/new"),
        LampTask("LaMP-3", "personalized product rating", "rating", ("text", "score"),
                 "text", labels=("1", "2", "3", "4", "5"), url_dir="LaMP_3"),
        LampTask("LaMP-4", "personalized news headline generation", "generation", ("text", "title"),
                 "text", url_dir="LaMP_4"),
        LampTask("LaMP-5", "personalized scholarly title generation", "generation", ("title", "abstract"),
                 "abstract", url_dir="LaMP_5"),
        # The Avocado e-mail corpus is licensed separately: LaMP publishes only ids for LaMP-6.
        LampTask("LaMP-6", "personalized email subject generation", "generation", ("text", "title"),
                 "text", url_dir="LaMP_6", downloadable=False),
        LampTask("LaMP-7", "personalized tweet paraphrasing", "generation", ("text",),
                 "text", url_dir="LaMP_7"),
    )
}

_NAME = re.compile(r"^\s*lamp[\s_-]*([1-7])\s*$", re.IGNORECASE)


def task_name(name: str) -> str:
    """The canonical task name: 'LaMP-3' from 'LaMP-3', 'LaMP_3', 'lamp3', 'lamp-3'."""
    match = _NAME.match(name) if isinstance(name, str) else None
    if match is None:
        raise UnknownSpecError(f"unknown LaMP task {name!r}; valid tasks: {', '.join(TASKS)} (also written LaMP_3, lamp3)")
    return f"LaMP-{match.group(1)}"


def get_task(name: str | LampTask) -> LampTask:
    return name if isinstance(name, LampTask) else TASKS[task_name(name)]
