"""LaMP data in the official layout: `{split}_questions.json` and `{split}_outputs.json`.

- questions: a JSON list of `{"id", "input", "profile": [{...}], "user_id"?}`; each profile
  item carries `id`, the task's fields (see `lamp_tasks.TASKS`) and optionally `date`;
- outputs: `{"task": "LaMP_3", "golds": [{"id", "output"}]}` (absent for the test split).

Every example becomes a `Query(id, text=input, user=User(id, history))` whose history holds
the profile items as Documents (text = the task's long field, title where the task has one,
meta = all item fields), paired with its gold output. Users keep `user_id` when the file
has it; otherwise a user is identified by a hash of their profile item ids, so examples with
the same profile share a user.

`load_lamp_split` fetches the official files (user- or time-based split) into a cache
folder on first use; `base_url` points it elsewhere (a mirror, a `file://` folder).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personarag.errors import InputError, lone_surrogate
from personarag.evaluation.lamp_tasks import BASE_URL, SPLIT_KINDS, SPLITS, LampTask, get_task, task_name
from personarag.types import Document, Query, User

logger = logging.getLogger(__name__)

# Profile fields that become Document.title, per task (the rest go to meta only).
_TITLE_FIELD = {"LaMP-1": "title", "LaMP-4": "title", "LaMP-5": "title", "LaMP-6": "title"}


@dataclass(frozen=True)
class LampExample:
    query: Query
    gold: str | None  # None for the unlabelled test split

    @property
    def id(self) -> str:
        return self.query.id


@dataclass(frozen=True)
class LampDataset:
    task: str
    examples: tuple[LampExample, ...]
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "examples", tuple(self.examples))

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[LampExample]:
        return iter(self.examples)

    @property
    def queries(self) -> list[Query]:
        return [e.query for e in self.examples]

    @property
    def golds(self) -> dict[str, str]:
        """id -> gold output, for the labelled examples."""
        return {e.id: e.gold for e in self.examples if e.gold is not None}

    @property
    def users(self) -> list[User]:
        """Distinct users in first-seen order (by id; the first profile seen for an id wins)."""
        seen: dict[str, User] = {}
        for example in self.examples:
            user = example.query.user
            if user is not None and user.id not in seen:
                seen[user.id] = user
        return list(seen.values())

    def head(self, n: int) -> LampDataset:
        """The first `n` examples (for quick runs)."""
        if not isinstance(n, int) or n < 1:
            raise InputError(f"head(n) needs a positive integer, got {n!r}")
        return LampDataset(self.task, self.examples[:n], self.source)


def load_lamp(task: str | LampTask, questions: str | Path, outputs: str | Path | None = None) -> LampDataset:
    """Read one LaMP split from local files; `outputs=None` for an unlabelled split."""
    spec = get_task(task)
    questions = Path(questions)
    records = _read_json(questions)
    if not isinstance(records, list):
        raise InputError(f"{questions}: expected a JSON list of examples, got {type(records).__name__}")
    queries = [_query(spec, record, position, questions) for position, record in enumerate(records)]
    seen: set[str] = set()
    for query in queries:
        if query.id in seen:
            raise InputError(f"{questions}: duplicate example id {query.id!r}")
        seen.add(query.id)
    golds: dict[str, str] | None = None
    if outputs is not None:
        golds = read_lamp_outputs(outputs, spec)
        _check_same_ids([q.id for q in queries], golds, questions, Path(outputs))
    examples = tuple(LampExample(q, None if golds is None else golds[q.id]) for q in queries)
    logger.info("%s: %d examples, %d users", questions, len(examples), len({q.user.id for q in queries if q.user}))
    return LampDataset(spec.name, examples, str(questions))


def read_lamp_outputs(path: str | Path, task: str | LampTask | None = None) -> dict[str, str]:
    """id -> gold output from an outputs file; checks its `task` field against `task` when given."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, Mapping) or not isinstance(data.get("golds"), list):
        got = sorted(data) if isinstance(data, Mapping) else type(data).__name__
        raise InputError(f"{path}: expected an object {{'task', 'golds': [{{'id', 'output'}}]}}, got {got}")
    if task is not None and data.get("task") is not None:
        expected = get_task(task).name
        try:
            found = task_name(str(data["task"]))
        except KeyError:
            found = str(data["task"])
        if found != expected:
            raise InputError(f"{path}: the outputs are for task {data['task']!r}, but {expected} was asked for")
    golds: dict[str, str] = {}
    for position, gold in enumerate(data["golds"]):
        where = f"{path}: golds[{position}]"
        if not isinstance(gold, Mapping) or "id" not in gold or "output" not in gold:
            raise InputError(f"{where}: expected {{'id', 'output'}}, got {gold!r:.200}")
        gold_id = _as_id(gold["id"], where)
        if gold_id in golds:
            raise InputError(f"{where}: duplicate id {gold_id!r}")
        if not isinstance(gold["output"], (str, int, float)) or isinstance(gold["output"], bool):
            raise InputError(f"{where} (id {gold_id!r}): output must be a string, got {gold['output']!r:.100}")
        golds[gold_id] = str(gold["output"])
    return golds


def _query(task: LampTask, record: Any, position: int, path: Path) -> Query:
    if not isinstance(record, Mapping):
        raise InputError(f"{path}: example {position} is a {type(record).__name__}, expected an object")
    for name in ("id", "input", "profile"):
        if name not in record:
            raise InputError(f"{path}: example {position}: missing field {name!r} (fields present: {sorted(record)})")
        if record[name] is None:
            raise InputError(f"{path}: example {position}: field {name!r} is null")
    example_id = _as_id(record["id"], f"{path}: example {position}")
    where = f"{path}: example {example_id!r}"
    if not isinstance(record["input"], str) or not record["input"].strip():
        raise InputError(f"{where}: 'input' must be a non-empty string, got {record['input']!r:.100}")
    _check_unicode(record["input"], f"{where}: 'input'")
    profile = record["profile"]
    if not isinstance(profile, list):
        raise InputError(f"{where}: 'profile' must be a list, got {type(profile).__name__}")
    history = [_document(task, item, index, where) for index, item in enumerate(profile)]
    ids = [d.id for d in history]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise InputError(f"{where}: profile item id {duplicate!r} appears more than once")
    if record.get("user_id") is not None:
        user_id = _as_id(record["user_id"], f"{where}: user_id")
    else:
        user_id = "u" + hashlib.sha1("\n".join(sorted(ids)).encode()).hexdigest()[:12]
    return Query(id=example_id, text=record["input"], user=User(user_id, tuple(history)), meta={"task": task.name})


def _document(task: LampTask, item: Any, index: int, where: str) -> Document:
    here = f"{where}, profile item {index}"
    if not isinstance(item, Mapping):
        raise InputError(f"{here}: expected an object, got {type(item).__name__}")
    for name in ("id",) + task.profile_fields:
        if name not in item or item[name] is None:
            what = "is null" if name in item else "is missing"
            raise InputError(
                f"{here}: field {name!r} {what} ({task.name} profile items need "
                f"{', '.join(('id',) + task.profile_fields)}; present: {sorted(item)})"
            )
    for name in task.profile_fields:
        if not isinstance(item[name], (str, int, float)) or isinstance(item[name], bool):
            raise InputError(f"{here}: field {name!r} must be a string, got {item[name]!r:.100}")
        if isinstance(item[name], str):
            _check_unicode(item[name], f"{here}: field {name!r}")
    title_field = _TITLE_FIELD.get(task.name)
    meta = {k: v for k, v in item.items() if k != "id"}
    return Document(
        id=_as_id(item["id"], here),
        text=str(item[task.long_field]) if task.long_field else "",
        title=str(item[title_field]) if title_field else None,
        meta=meta,
    )


def _check_unicode(text: str, where: str) -> None:
    bad = lone_surrogate(text)
    if bad is not None:
        raise InputError(f"{where} contains a lone surrogate ({bad}), which is not Unicode text; remove or replace it in the file")


def _as_id(value: Any, where: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value:
        raise InputError(f"{where}: id must be a non-empty string, got {value!r}")
    return value


def _check_same_ids(question_ids: Sequence[str], golds: Mapping[str, str], questions: Path, outputs: Path) -> None:
    asked = set(question_ids)
    no_gold = [i for i in question_ids if i not in golds]
    no_question = [i for i in golds if i not in asked]
    if no_gold or no_question:
        parts = []
        if no_gold:
            parts.append(f"{len(no_gold)} question ids have no gold in {outputs} (e.g. {', '.join(no_gold[:5])})")
        if no_question:
            parts.append(f"{len(no_question)} gold ids have no question in {questions} (e.g. {', '.join(no_question[:5])})")
        raise InputError("questions and outputs do not match: " + "; ".join(parts))


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})") from None
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text ({error})") from None
    except (ValueError, RecursionError) as error:  # an integer over 4,300 digits; nesting too deep
        raise InputError(f"{path}: JSON not readable ({type(error).__name__}: {str(error)[:120]})") from None


# --- official files ----------------------------------------------------------------------
def lamp_urls(task: str | LampTask, split: str = "dev", split_kind: str = "user", base_url: str | None = None) -> tuple[str, str | None]:
    """(questions URL, outputs URL or None for the unlabelled test split)."""
    spec = get_task(task)
    if split not in SPLITS:
        raise InputError(f"unknown LaMP split {split!r}; valid splits: {', '.join(SPLITS)}")
    if split_kind not in SPLIT_KINDS:
        raise InputError(f"unknown LaMP split kind {split_kind!r}; valid: {', '.join(SPLIT_KINDS)} (user-based, time-based)")
    questions = spec.file_url(split, "questions", split_kind)
    outputs = None if split == "test" else spec.file_url(split, "outputs", split_kind)
    if base_url is not None:
        questions = base_url.rstrip("/") + questions[len(BASE_URL):]
        outputs = None if outputs is None else base_url.rstrip("/") + outputs[len(BASE_URL):]
    return questions, outputs


def default_cache_dir() -> Path:
    root = os.environ.get("PERSONARAG_CACHE") or Path.home() / ".cache" / "personarag"
    return Path(root) / "lamp"


def download_lamp(
    task: str | LampTask,
    split: str = "dev",
    split_kind: str = "user",
    cache_dir: str | Path | None = None,
    base_url: str | None = None,
) -> tuple[Path, Path | None]:
    """Local paths of a split's files, downloading them into `cache_dir` when missing."""
    spec = get_task(task)
    if not spec.downloadable and base_url is None:
        raise InputError(
            f"{spec.name} cannot be downloaded: its Avocado e-mails are licensed separately; "
            "build the files yourself and use load_lamp(task, questions, outputs)"
        )
    urls = lamp_urls(spec, split, split_kind, base_url)
    folder = Path(cache_dir or default_cache_dir()) / split_kind / spec.url_dir.split("/")[0]
    paths = []
    for url in urls:
        if url is None:
            paths.append(None)
            continue
        target = folder / url.rsplit("/", 1)[1]
        if not target.is_file():
            _fetch(url, target)
        paths.append(target)
    return paths[0], paths[1]


def _fetch(url: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s -> %s", url, target)
    handle, partial = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            shutil.copyfileobj(response, out)
        os.replace(partial, target)  # atomic: a crash never leaves a half file under the real name
    except (urllib.error.URLError, OSError) as error:
        Path(partial).unlink(missing_ok=True)
        raise InputError(f"could not download {url}: {error}") from error


def load_lamp_split(
    task: str | LampTask,
    split: str = "dev",
    split_kind: str = "user",
    cache_dir: str | Path | None = None,
    base_url: str | None = None,
) -> LampDataset:
    """An official LaMP split, from the cache or downloaded into it."""
    questions, outputs = download_lamp(task, split, split_kind, cache_dir, base_url)
    return load_lamp(task, questions, outputs)
