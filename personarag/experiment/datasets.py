"""What the runner evaluates on: ranking datasets (BEIR, BRIGHT) and LaMP generation.

An adapter wraps what the toolkit's loaders return and tells the runner:
- `queries`: what to run, in order; `data`: a content hash (and source) of each part
  actually read (corpus, queries, qrels; LaMP questions and outputs): the run's identity;
- `run_batch`: one record per result file for each query of a batch;
- `score`, `write_outputs`, `stats`: metrics, run.trec / reasoning.jsonl, stats.json.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from personarag.errors import InputError
from personarag.experiment import artifacts
from personarag.rerankers.traces import reasoning_rows
from personarag.types import Document, Query, Ranking, Usage

logger = logging.getLogger(__name__)


def content_hash(rows: Iterable[Any]) -> str:
    """sha256 over the canonical JSON of each row, streamed (no whole-corpus string)."""
    hasher = hashlib.sha256()
    for row in rows:
        hasher.update(json.dumps(row, ensure_ascii=False, sort_keys=True, default=str).encode("utf-8", "surrogatepass"))
        hasher.update(b"\n")
    return hasher.hexdigest()[:16]


def _doc_row(doc: Document) -> list[Any]:
    return [doc.id, doc.title, doc.text, dict(doc.meta)]


def _query_row(query: Query) -> list[Any]:
    user = query.user
    history = [_doc_row(d) for d in user.history] if user is not None else None
    return [query.id, query.text, dict(query.meta), user.id if user is not None else None, history]


def _part(sha: str, source: Any) -> dict[str, Any]:
    return {"sha256": sha, "source": str(source) if source is not None else None}


def _trace_json(ranking_trace: Sequence[Any]) -> list[dict[str, Any]]:
    return [
        {"stage": t.stage, "problems": list(t.problems), "usage": dataclasses.asdict(t.usage),
         **({"reasoning": t.reasoning} if t.reasoning else {})}
        for t in ranking_trace
    ]


class RankingDataset:
    """Queries over a corpus with qrels (BEIR, BRIGHT); writes run.trec and reasoning.jsonl."""

    kind = "ranking"
    record_parts: tuple[str, ...] = ()  # every data part is in the run's name
    result_files = ("rankings.jsonl",)
    default_measures: tuple[str, ...] = ("nDCG@10", "Recall@100", "MAP", "MRR@10")

    def __init__(self, name: str, corpus: Any, queries: Sequence[Query], qrels: Any, *,
                 excluded: Mapping[str, Iterable[str]] | None = None, sources: Mapping[str, Any] | None = None,
                 all_queries: Sequence[Query] | None = None, all_qrels: Any = None) -> None:
        self.name, self.corpus, self.qrels = name, corpus, qrels
        self.queries = list(queries)
        self.excluded = excluded or {}
        sources = sources or {}
        read_queries = list(all_queries) if all_queries is not None else self.queries
        read_qrels = all_qrels if all_qrels is not None else qrels
        self.data = {
            "corpus": _part(content_hash(_doc_row(d) for d in corpus.values()), sources.get("corpus")),
            "queries": _part(content_hash(_query_row(q) for q in read_queries), sources.get("queries")),
            "qrels": _part(content_hash((q, sorted(read_qrels[q].items())) for q in read_qrels), sources.get("qrels")),
        }
        if self.excluded:
            self.data["excluded"] = _part(content_hash((q, sorted(v)) for q, v in sorted(self.excluded.items())),
                                          sources.get("queries"))

    @classmethod
    def from_beir(cls, dataset: Any, max_queries: int | None = None) -> RankingDataset:
        queries, qrels = dataset.queries, dataset.qrels
        if max_queries is not None:
            queries = queries[:max_queries]
            qrels = qrels.subset(q.id for q in queries)
        root = Path(dataset.path) if dataset.path is not None else None
        sources = {} if root is None else {
            "corpus": root / "corpus.jsonl", "queries": root / "queries.jsonl", "qrels": root / "qrels" / f"{dataset.split}.tsv"}
        return cls(dataset.name, dataset.corpus, queries, qrels, sources=sources,
                   all_queries=dataset.queries, all_qrels=dataset.qrels)

    @classmethod
    def from_bright(cls, task: Any, max_queries: int | None = None, source: Any = None) -> RankingDataset:
        queries = task.queries[:max_queries] if max_queries else task.queries
        folder = Path(source) / task.task if source else None
        sources = {"corpus": folder, "queries": folder, "qrels": folder}
        dataset = cls(task.task, task.corpus, queries, task.qrels.subset(q.id for q in queries),
                      excluded=task.excluded, sources=sources, all_queries=task.queries, all_qrels=task.qrels)
        dataset.default_measures = ("nDCG@10", "Recall@100")
        return dataset

    # ---- running ----------------------------------------------------------------------------
    def check(self, pipeline: Any) -> None:
        if pipeline.retriever is None:
            raise InputError(f"{self.name}: the first stage must be a retriever")
        if pipeline.generator is not None:
            raise InputError(f"{self.name} scores rankings; this pipeline ends in a generator ({pipeline.generator!r})")

    def prepare(self, pipeline: Any) -> None:
        logger.info("indexing %d documents", len(self.corpus))
        pipeline.index(self.corpus)

    def run_batch(self, pipeline: Any, queries: list[Query]) -> list[tuple[dict[str, Any], ...]]:
        return ranking_records(queries, pipeline.retrieve(queries))

    # ---- results ----------------------------------------------------------------------------
    def _run(self, done: Mapping[str, Mapping[str, Any]], name: str) -> Any:
        from personarag.evaluation.bright import remove_excluded
        from personarag.evaluation.runs import Run

        run = Run({q.id: [tuple(d) for d in done[q.id]["docs"]] for q in self.queries if q.id in done}, name=name)
        return remove_excluded(run, self.excluded) if self.excluded else run

    def score(self, done: Mapping[str, Mapping[str, Any]], measures: Sequence[Any], name: str) -> tuple[dict, dict, Any]:
        from personarag.evaluation.metrics import evaluate

        result = evaluate(self._run(done, name), self.qrels, [m.name for m in measures])
        return result.aggregate, result.per_query, result

    def write_outputs(self, out: Path, done: Mapping[str, Mapping[str, Any]], name: str) -> list[str]:
        import os

        temp = artifacts.temp_path(out / "run.trec")
        try:
            self._run(done, name).write_trec(temp, name=name)
            os.replace(temp, out / "run.trec")
        finally:
            temp.unlink(missing_ok=True)
        rows = [row for q in self.queries if q.id in done for row in done[q.id].get("reasoning", ())]
        if rows:
            artifacts.write_text(out / "reasoning.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            return ["run.trec", "reasoning.jsonl"]
        return ["run.trec"]

    def stats(self, result: Any, ran: int, seconds: Mapping[str, float], usage: Usage) -> dict[str, Any]:
        return {
            "queries": len(self.queries),
            "judged_queries": result.num_queries if result is not None else 0,
            "queries_without_results": len(result.missing_queries) if result is not None else 0,
            "documents": len(self.corpus),
            "ran": ran,
            "resumed": len(self.queries) - ran,
            "seconds": {"index": round(seconds.get("index", 0.0), 3), "retrieve": round(seconds.get("run", 0.0), 3)},
            "usage": dataclasses.asdict(usage),
        }


def ranking_records(queries: Sequence[Query], rankings: Sequence[Ranking],
                    seconds: float | None = None) -> list[tuple[dict[str, Any], ...]]:
    """One rankings.jsonl record per query: the ranked ids and scores, traces, usage, reasoning;
    with `seconds` (the batch's wall time), each query's even share of it."""
    records = []
    for query, ranking in zip(queries, rankings):
        if ranking.query.id != query.id:
            raise InputError(f"the pipeline returned {ranking.query.id!r} for query {query.id!r}")
        reasoning = reasoning_rows([ranking])  # reasoning and the raw model answers
        record = {"id": query.id, "docs": [list(hit) for hit in zip(ranking.ids, ranking.scores)],
                  "trace": _trace_json(ranking.trace), "usage": dataclasses.asdict(ranking.usage)}
        if reasoning:
            record["reasoning"] = reasoning
        if seconds is not None:
            record["seconds"] = round(seconds / len(queries), 6)
        records.append((record,))
    return records


class LampData:
    """A LaMP task: retrieve from each user's profile, generate, score with the task's metrics."""

    kind = "generation"
    result_files = ("retrieved.jsonl", "predictions.jsonl")  # the last one marks an example done
    # checked per finished example (its "input" hashes) rather than in the run's name, so a run
    # over the first N examples can be extended to more
    record_parts = ("questions", "outputs")

    def __init__(self, dataset: Any, *, max_examples: int | None = None, users: Sequence[Any] | None = None,
                 sources: Mapping[str, Any] | None = None) -> None:
        sources = sources or {}
        self.name = dataset.task
        self.task = dataset.task
        self.users = list(users) if users is not None else list(dataset.users)  # the whole split's
        self.full = dataset
        self.dataset = dataset.head(max_examples) if max_examples is not None else dataset
        self.queries = self.dataset.queries
        self.golds = {e.id: e.gold for e in self.dataset if e.gold is not None}
        self.inputs = {e.id: {"questions": content_hash([_query_row(e.query)]), "outputs": content_hash([e.gold])}
                       for e in self.dataset}
        self.data = {
            "questions": _part(content_hash(_query_row(e.query) for e in dataset), sources.get("questions")),
            "outputs": _part(content_hash((e.id, e.gold) for e in dataset), sources.get("outputs")),
        }
        from personarag.evaluation.lamp_metrics import PRIMARY

        self.default_measures: tuple[str, ...] = (PRIMARY[self.task],) + (("rmse",) if self.task == "LaMP-3" else ())

    def check(self, pipeline: Any) -> None:
        if pipeline.generator is None:
            raise InputError("a LaMP run needs a generator as the last pipeline stage, e.g. lamp:transformers:PATH")
        if pipeline.retriever is not None and pipeline.retriever.needs_corpus:
            raise InputError(
                f"retriever {pipeline.retriever.spec_name!r} searches a corpus; LaMP retrieves from each user's profile: "
                "use history:bm25, history:dense:MODEL, recency, random, collaborative:... or none"
            )

    def identity(self, pipeline: Any) -> dict[str, Any]:
        """A retriever over other users' histories, or a floor counting their labels, depends on the
        user pool: part of the run's identity."""
        if not any(_fits_user_pool(stage) for stage in (pipeline.retriever, pipeline.generator)):
            return {}
        ids = "\n".join(sorted(u.id for u in self.users))
        return {"user_pool": {"users": len(self.users), "sha256": hashlib.sha256(ids.encode()).hexdigest()[:16]}}

    def prepare(self, pipeline: Any) -> None:
        # the collaborative retriever searches the pool's histories; the floors count its labels
        for stage in (pipeline.retriever, pipeline.generator):
            if _fits_user_pool(stage):
                stage.fit_users(self.users)

    def run_batch(self, pipeline: Any, queries: list[Query]) -> list[tuple[dict[str, Any], ...]]:
        rankings = pipeline.retrieve(queries)
        outputs = pipeline.generator.generate([r.top(pipeline.context_k) for r in rankings])
        golds = {e.id: e.gold for e in self.dataset}
        records = []
        for query, ranking, output in zip(queries, rankings, outputs):
            if output.query.id != query.id:
                raise InputError(f"the generator returned {output.query.id!r} for example {query.id!r}")
            retrieved = {
                "id": query.id,
                "retrieved": [[d.doc.id, d.score] for d in ranking.docs],
                "context": [d.doc.id for d in output.context],
                "problems": list(output.trace[-1].problems) if output.trace else [],
                "trace": _trace_json(output.trace),
                "usage": dataclasses.asdict(output.usage),
                "input": self.inputs[query.id],
            }
            records.append((retrieved, {"id": query.id, "prediction": output.text, "gold": golds.get(query.id)}))
        return records

    def score(self, done: Mapping[str, Mapping[str, Any]], measures: Sequence[Any], name: str) -> tuple[dict, dict, Any]:
        from personarag.evaluation.lamp_metrics import score_lamp

        if not self.golds:
            return {}, {}, None
        scores = score_lamp(self.task, {i: done[i]["prediction"] for i in self.golds if i in done}, self.golds)
        per_query = {i: _lamp_values(values) for i, values in scores.per_example.items()}
        return scores.aggregate, per_query, scores

    def write_outputs(self, out: Path, done: Mapping[str, Mapping[str, Any]], name: str) -> list[str]:
        return []

    def stats(self, result: Any, ran: int, seconds: Mapping[str, float], usage: Usage) -> dict[str, Any]:
        run_seconds = seconds.get("run", 0.0)
        return {
            "examples": len(self.dataset),
            "generated": ran,
            "resumed": len(self.dataset) - ran,
            "seconds": round(run_seconds, 3),
            "seconds_per_example": round(run_seconds / ran, 4) if ran else None,
            "usage": dataclasses.asdict(usage),
        }


def _lamp_values(example: Mapping[str, Any]) -> dict[str, Any]:
    """Per-example values under the aggregate's names, so a paired test can use them."""
    values = dict(example)
    if "correct" in values:
        values["accuracy"] = float(values["correct"])
    if "abs_error" in values:
        values["mae"] = values["abs_error"]
    return values


def _fits_user_pool(stage: Any) -> bool:
    """A stage that takes the split's users through fit_users (a retriever over other users'
    histories, a floor counting their labels), unless it is bound to a user store (whose users
    and changes it reads itself)."""
    return hasattr(stage, "fit_users") and not getattr(stage, "bound_to_store", False)
