"""Training data for rerankers: (query, document, label) examples keyed by ids.

Sources:
- a BEIR-layout dataset (corpus + queries + qrels split): positives from the qrels, hard
  negatives mined by one of the toolkit's retrievers (any retriever spec), judged
  positives excluded;
- a TREC run file in place of the retriever (negatives taken from its rankings);
- LLM-feedback distillation (LaMP / collaborative retrieval): examples with graded float
  labels (`examples_from_feedback` turns LLM scores into them), exchanged as JSONL with the
  `TrainingExample` fields.

Negatives are drawn per query with a random generator seeded from `(seed, query_id)`,
so the same query gets the same negatives whatever the order or subset of queries.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from personarag.errors import InputError
from personarag.types import Corpus, Document, Query, check_id

if TYPE_CHECKING:
    from personarag.evaluation.qrels import Qrels
    from personarag.evaluation.runs import Run
    from personarag.retrievers.base import Retriever

logger = logging.getLogger(__name__)

SAMPLING = ("random", "top")


@dataclass(frozen=True)
class TrainingExample:
    """One labelled (query, document) pair. `label` is 1/0 for qrels data, a graded score for feedback.

    `reasoning` (optional) is a teacher's rationale, used as the `<think>` target of
    reason-then-score SFT.
    """

    query_id: str
    query_text: str
    doc_id: str
    doc_text: str
    label: float
    reasoning: str | None = None

    def __post_init__(self) -> None:
        for name in ("query_id", "doc_id"):
            check_id(getattr(self, name), f"TrainingExample.{name}")
        for name in ("query_text", "doc_text"):
            if not isinstance(getattr(self, name), str):
                raise InputError(f"TrainingExample {self.query_id!r}/{self.doc_id!r}: {name} must be a string")
        if self.reasoning is not None and not isinstance(self.reasoning, str):
            raise InputError(f"TrainingExample {self.query_id!r}/{self.doc_id!r}: reasoning must be a string or None")
        if isinstance(self.label, bool) or not isinstance(self.label, (int, float)):
            raise InputError(f"TrainingExample {self.query_id!r}/{self.doc_id!r}: label must be a number, got {self.label!r}")
        object.__setattr__(self, "label", float(self.label))


@dataclass(frozen=True)
class QueryGroup:
    """All examples of one query: positives (label > 0) best first, then negatives."""

    query_id: str
    query_text: str
    positives: tuple[TrainingExample, ...]
    negatives: tuple[TrainingExample, ...]


@dataclass(frozen=True)
class DataReport:
    """What went into a training set, and what had to be left out."""

    source: str
    queries: int = 0
    positives: int = 0
    negatives: int = 0
    missing_docs: int = 0  # judgements whose document is not in the corpus
    missing_queries: int = 0  # judged queries absent from the query file
    queries_without_negatives: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrainingData:
    examples: tuple[TrainingExample, ...]
    report: DataReport

    def __len__(self) -> int:
        return len(self.examples)

    def groups(self) -> list[QueryGroup]:
        """Examples grouped by query, in order of first appearance; positives sorted by label, best first."""
        order: dict[str, list[TrainingExample]] = {}
        for example in self.examples:
            order.setdefault(example.query_id, []).append(example)
        out = []
        for query_id, examples in order.items():
            positives = sorted((e for e in examples if e.label > 0), key=lambda e: -e.label)
            negatives = [e for e in examples if e.label <= 0]
            out.append(QueryGroup(query_id, examples[0].query_text, tuple(positives), tuple(negatives)))
        return out

    @classmethod
    def from_examples(cls, examples: Iterable[TrainingExample], *, source: str = "examples") -> TrainingData:
        examples = tuple(examples)
        for position, example in enumerate(examples):
            if not isinstance(example, TrainingExample):
                raise InputError(f"{source}: item {position} is a {type(example).__name__}, expected TrainingExample")
        if not examples:
            raise InputError(f"{source}: no training examples")
        report = DataReport(
            source=source,
            queries=len({e.query_id for e in examples}),
            positives=sum(e.label > 0 for e in examples),
            negatives=sum(e.label <= 0 for e in examples),
        )
        return cls(examples, report)


def examples_from_feedback(
    query: Query,
    docs: Sequence[Document],
    scores: Sequence[float],
    *,
    temperature: float = 1.0,
) -> list[TrainingExample]:
    """LLM-feedback distillation (e.g. `training.llm_feedback.Feedback.llm_scores`) as training examples.

    Each candidate's label is its probability under softmax(scores / temperature) over the
    query's candidates: the target distribution of CFRAG's distillation, usable as soft labels
    by the BCE and listwise losses.
    """
    if len(docs) != len(scores):
        raise InputError(f"query {query.id!r}: {len(docs)} documents but {len(scores)} scores")
    if temperature <= 0:
        raise InputError(f"temperature must be > 0, got {temperature}")
    if not docs:
        return []
    top = max(scores)
    weights = [math.exp((s - top) / temperature) for s in scores]
    total = sum(weights)
    return [
        TrainingExample(query.id, query.text, doc.id, doc.full_text, weight / total)
        for doc, weight in zip(docs, weights)
    ]


def write_examples(examples: Iterable[TrainingExample], path: str | Path) -> Path:
    """JSONL, one `TrainingExample` per line (its fields; `reasoning` only when set)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for example in examples:
            row = asdict(example)
            if row["reasoning"] is None:
                del row["reasoning"]
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def read_examples(path: str | Path) -> TrainingData:
    """Examples written by `write_examples` (e.g. LLM-feedback distillation output)."""
    from personarag.evaluation.jsonl import iter_jsonl

    path = Path(path)
    examples = []
    for line_number, row in iter_jsonl(path, "training examples file"):
        missing = {"query_id", "query_text", "doc_id", "doc_text", "label"} - set(row)
        if missing:
            raise InputError(f"{path}:{line_number}: missing fields {sorted(missing)}")
        try:
            examples.append(TrainingExample(**{k: row[k] for k in TrainingExample.__dataclass_fields__ if k in row}))
        except InputError as error:
            raise InputError(f"{path}:{line_number}: {error}") from error
    return TrainingData.from_examples(examples, source=str(path))


def mine_candidates(
    retriever: str | Retriever | Mapping[str, Any],
    corpus: Corpus,
    queries: Sequence[Query],
    depth: int = 30,
) -> dict[str, list[str]]:
    """Ranked candidate doc ids per query from any retriever of the toolkit (indexed on `corpus`)."""
    from personarag import registry

    built = registry.build(retriever, role="retriever")
    built.index(corpus)
    rankings = built.retrieve(list(queries), k=depth)
    return {r.query.id: r.ids for r in rankings}


def build_examples(
    corpus: Corpus,
    queries: Sequence[Query],
    qrels: Qrels | Mapping[str, Mapping[str, int]],
    candidates: Mapping[str, Sequence[str]],
    *,
    negatives: int = 4,
    sampling: str = "random",
    seed: int = 0,
    source: str = "qrels",
) -> TrainingData:
    """Positives from `qrels` (relevance > 0), `negatives` per query from its ranked `candidates`.

    Judged positives are never negatives. Judgements of documents missing from the corpus and
    of queries missing from `queries` are counted in the report (and logged), not fatal; a
    set of qrels that leaves no positive at all is an error.
    """
    if not isinstance(negatives, int) or negatives < 0:
        raise InputError(f"negatives must be a non-negative integer, got {negatives!r}")
    if sampling not in SAMPLING:
        raise InputError(f"sampling must be one of {SAMPLING}, got {sampling!r}")
    by_id = {q.id: q for q in queries}
    examples: list[TrainingExample] = []
    missing_docs = missing_queries = no_negatives = n_pos = n_neg = n_queries = 0
    for query_id, judged in qrels.items():
        query = by_id.get(query_id)
        if query is None:
            missing_queries += 1
            continue
        positive_ids = [d for d, rel in judged.items() if rel > 0]
        present = [d for d in positive_ids if d in corpus]
        missing_docs += len(positive_ids) - len(present)
        if not present:
            continue
        n_queries += 1
        for doc_id in present:
            examples.append(TrainingExample(query_id, query.text, doc_id, corpus[doc_id].full_text, 1.0))
        n_pos += len(present)
        excluded = set(positive_ids)
        pool = [d for d in dict.fromkeys(candidates.get(query_id, ())) if d not in excluded and d in corpus]
        if sampling == "top":
            chosen = pool[:negatives]
        else:
            chosen = random.Random(f"{seed}\x00{query_id}").sample(pool, min(negatives, len(pool)))
        if negatives and not chosen:
            no_negatives += 1
        for doc_id in chosen:
            examples.append(TrainingExample(query_id, query.text, doc_id, corpus[doc_id].full_text, 0.0))
        n_neg += len(chosen)
    if missing_docs or missing_queries:
        logger.warning(
            "%s: %d judgements name documents missing from the corpus, %d judged queries are missing "
            "from the queries; they were left out",
            source,
            missing_docs,
            missing_queries,
        )
    if not n_pos:
        raise InputError(
            f"{source}: no positive judgement (relevance > 0) whose query and document both exist "
            f"({len(qrels)} judged queries, {missing_queries} missing queries, {missing_docs} missing documents)"
        )
    report = DataReport(source, n_queries, n_pos, n_neg, missing_docs, missing_queries, no_negatives)
    return TrainingData(tuple(examples), report)


def build_from_beir(
    dataset: str | Path,
    split: str = "train",
    *,
    miner: str | Retriever | Mapping[str, Any] | None = "bm25",
    run: str | Path | Run | None = None,
    negatives: int = 4,
    depth: int = 30,
    sampling: str = "random",
    seed: int = 0,
    query_ids: Iterable[str] | None = None,
) -> TrainingData:
    """Examples from a BEIR-layout dataset split, negatives mined by `miner` or read from `run`.

    `query_ids` restricts the split to those queries (e.g. to hold some out as a dev set).
    """
    from personarag.evaluation.beir import load_beir

    data = load_beir(dataset, split=split)
    qrels = data.qrels if query_ids is None else data.qrels.subset(query_ids)
    if not len(qrels):
        raise InputError(f"{dataset} split {split!r}: no judged queries{' among the ones asked for' if query_ids else ''}")
    queries = [q for q in data.queries if q.id in qrels]
    if run is not None:
        candidates = candidates_from_run(run, depth)
        source = f"{dataset}:{split} with negatives from run {run}"
    elif miner is not None:
        candidates = mine_candidates(miner, data.corpus, queries, depth)
        source = f"{dataset}:{split} with negatives mined by {_describe(miner)} (top {depth})"
    else:
        candidates = {}
        source = f"{dataset}:{split} without negatives"
    return build_examples(
        data.corpus, queries, qrels, candidates, negatives=negatives, sampling=sampling, seed=seed, source=source
    )


def candidates_from_run(run: str | Path | Run, depth: int | None = None) -> dict[str, list[str]]:
    """Ranked doc ids per query from a TREC run file (or a loaded `Run`), cut at `depth`."""
    from personarag.evaluation.runs import Run

    loaded = run if isinstance(run, Run) else Run.read_trec(run)
    return {qid: [doc for doc, _ in loaded[qid]][:depth] for qid in loaded}


def _describe(component: Any) -> str:
    if isinstance(component, str):
        return component
    if isinstance(component, Mapping):
        return str(component.get("spec"))
    return repr(component)
