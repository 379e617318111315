"""BRIGHT (reasoning-intensive retrieval): examples, documents and gold ids per task.

Where the data comes from, in this order:
- `dataset_dir/<task>/examples.jsonl` + `documents.jsonl` (or `long_documents.jsonl`),
  one JSON object a line (the layout of `shared/data/bright`; documents are `{id, content}`);
- `dataset_dir/<config>/<task>-*.parquet`: a snapshot of the Hugging Face dataset repo
  (`huggingface-cli download xlangai/BRIGHT --repo-type dataset --local-dir DIR`);
- no `dataset_dir`: the hub dataset `xlangai/BRIGHT` through `datasets` (online only).

Scoring follows the official BRIGHT code: gold ids are relevance 1 (`gold_ids`, or
`gold_ids_long` with long documents), and each example's `excluded_ids` are removed
from the run before nDCG@10 is computed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from personarag.errors import InputError, require
from personarag.evaluation.jsonl import field_str, iter_jsonl
from personarag.evaluation.qrels import Qrels
from personarag.evaluation.runs import Run
from personarag.types import Corpus, Document, Query

logger = logging.getLogger(__name__)

HUB_NAME = "xlangai/BRIGHT"
TASKS: tuple[str, ...] = (
    "biology", "earth_science", "economics", "psychology", "robotics", "stackoverflow",
    "sustainable_living", "leetcode", "pony", "aops", "theoremqa_theorems", "theoremqa_questions",
)
#: Tasks whose examples point at long documents (the others have "N/A" there).
LONG_DOCUMENT_TASKS: tuple[str, ...] = TASKS[:7] + ("pony",)
#: Hub configs whose `query` is an LLM's reasoning about the original query.
REASONING_CONFIGS: tuple[str, ...] = (
    "gpt4_reason", "claude-3-opus_reason", "Gemini-1.0_reason", "llama3-70b_reason", "grit_reason",
)
_NOT_AVAILABLE = "N/A"


@dataclass(frozen=True)
class BrightTask:
    task: str
    corpus: Corpus
    queries: list[Query]
    qrels: Qrels
    excluded: Mapping[str, frozenset[str]] = field(default_factory=dict)
    long_documents: bool = False

    def remove_excluded(self, run: Run) -> Run:
        return remove_excluded(run, self.excluded)


def check_task(task: str) -> str:
    if task not in TASKS:
        raise InputError(f"unknown BRIGHT task {task!r}; valid tasks: {', '.join(TASKS)}")
    return task


def load_bright(
    task: str,
    dataset_dir: str | Path | None = None,
    *,
    long_documents: bool = False,
    reasoning: str | None = None,
    cache_dir: str | Path | None = None,
) -> BrightTask:
    """Load one BRIGHT task. `reasoning` names a hub config whose queries replace the originals."""
    check_task(task)
    if long_documents and task not in LONG_DOCUMENT_TASKS:
        raise InputError(
            f"BRIGHT task {task!r} has no long documents; tasks with them: {', '.join(LONG_DOCUMENT_TASKS)}"
        )
    if reasoning is not None and reasoning not in REASONING_CONFIGS:
        raise InputError(f"unknown BRIGHT reasoning config {reasoning!r}; valid: {', '.join(REASONING_CONFIGS)}")
    documents_config = "long_documents" if long_documents else "documents"
    source = _Source(Path(dataset_dir) if dataset_dir is not None else None, task, cache_dir)
    examples = list(source.records("examples"))
    reasoning_texts = (
        {field_str(r, "id", where): field_str(r, "query", where) for where, r in source.records(reasoning)} if reasoning else {}
    )
    corpus = Corpus(
        (Document(id=field_str(r, "id", where), text=field_str(r, "content", where))
         for where, r in source.records(documents_config)),
        source=source.describe(documents_config),
    )
    gold_field = "gold_ids_long" if long_documents else "gold_ids"
    queries: list[Query] = []
    judgements: dict[str, dict[str, int]] = {}
    excluded: dict[str, frozenset[str]] = {}
    missing_gold = 0
    first_seen: dict[str, str] = {}
    for where, record in examples:
        query_id = field_str(record, "id", where)
        if query_id in first_seen:
            raise InputError(f"{where}: duplicate example id {query_id!r} (first on {first_seen[query_id]})")
        first_seen[query_id] = where
        text = reasoning_texts.get(query_id, field_str(record, "query", where))
        if reasoning and query_id not in reasoning_texts:
            raise InputError(f"{where}: example {query_id!r} has no query in the {reasoning!r} config")
        if not text.strip():
            raise InputError(f"{where}: example {query_id!r} has an empty query")
        gold = [d for d in _id_list(record, gold_field, where) if d != _NOT_AVAILABLE]
        missing_gold += sum(1 for d in gold if d not in corpus)
        judgements[query_id] = {doc_id: 1 for doc_id in gold}
        excluded[query_id] = frozenset(d for d in _id_list(record, "excluded_ids", where) if d != _NOT_AVAILABLE)
        meta = {"original_query": record.get("query"), "reasoning": record.get("reasoning"),
                "gold_answer": record.get("gold_answer")}
        queries.append(Query(id=query_id, text=text, meta=meta))
    if missing_gold:
        logger.warning("BRIGHT %s: %d gold ids are not in the %s corpus", task, missing_gold, documents_config)
    return BrightTask(task, corpus, queries, Qrels(judgements, source=f"bright/{task}"), excluded, long_documents)


def remove_excluded(run: Run, excluded: Mapping[str, Iterable[str]]) -> Run:
    """Drop each query's excluded document ids from the run (BRIGHT's official scoring)."""
    kept = {}
    for query_id, ranked in run.items():
        banned = set(excluded.get(query_id, ()))
        kept[query_id] = [(doc_id, score) for doc_id, score in ranked if doc_id not in banned]
    return Run(kept, name=run.name)


def _id_list(record: Mapping[str, Any], name: str, where: str) -> list[str]:
    if name not in record:
        raise InputError(f"{where}: missing field {name!r} (fields present: {sorted(record)})")
    value = record[name]
    if value is None:
        raise InputError(f"{where}: field {name!r} is null; expected a list of ids")
    if isinstance(value, str) or not isinstance(value, Sequence) and not hasattr(value, "tolist"):
        raise InputError(f"{where}: field {name!r} must be a list of ids, got {type(value).__name__}")
    return [str(v) for v in (value.tolist() if hasattr(value, "tolist") else value)]


class _Source:
    """Yields `(where, record)` for one config of one task from the first layout that has it."""

    def __init__(self, root: Path | None, task: str, cache_dir: str | Path | None) -> None:
        if root is not None and not root.is_dir():
            raise InputError(f"BRIGHT dataset dir {root} does not exist")
        self.root, self.task, self.cache_dir = root, task, cache_dir

    def describe(self, config: str) -> str:
        return f"{self.root}/{self.task}/{config}" if self.root else f"{HUB_NAME}:{config}/{self.task}"

    def records(self, config: str) -> Iterator[tuple[str, dict[str, Any]]]:
        if self.root is None:
            yield from self._hub(config)
            return
        jsonl = self.root / self.task / f"{config}.jsonl"
        if jsonl.is_file():
            for line_number, record in iter_jsonl(jsonl):
                yield f"{jsonl}:{line_number}", record
            return
        parquet = sorted((self.root / config).glob(f"{self.task}-*.parquet"))
        if parquet:
            yield from self._parquet(parquet)
            return
        raise InputError(
            f"BRIGHT {config!r} for task {self.task!r} not found: looked for {jsonl} and "
            f"{self.root / config / (self.task + '-*.parquet')}; the data is on the Hugging Face hub as "
            f"{HUB_NAME} (config {config!r}, split {self.task!r})"
        )

    @staticmethod
    def _parquet(paths: list[Path]) -> Iterator[tuple[str, dict[str, Any]]]:
        parquet = require("pyarrow.parquet", "bright", purpose="reading BRIGHT parquet files")
        for path in paths:
            for row_number, record in enumerate(parquet.read_table(path).to_pylist()):
                yield f"{path} row {row_number}", record

    def _hub(self, config: str) -> Iterator[tuple[str, dict[str, Any]]]:
        datasets = require("datasets", "bright", purpose="loading BRIGHT from the Hugging Face hub")
        dataset = datasets.load_dataset(HUB_NAME, config, split=self.task, cache_dir=self.cache_dir)
        for row_number, record in enumerate(dataset):
            yield f"{HUB_NAME}:{config}/{self.task} row {row_number}", dict(record)
