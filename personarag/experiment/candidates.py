"""Reranking a fixed first stage: candidate lists from a file are where every system starts.

    from personarag.evaluation.candidates import read_candidates
    from personarag.evaluation.qrels import Qrels
    from personarag.experiment import Experiment
    from personarag.experiment.candidates import CandidateDataset
    from personarag.pipeline import Pipeline

    data = CandidateDataset(read_candidates("BM25_dl19.json"), Qrels.read("qrels.dl19-passage.txt"),
                            relevance_level=2)
    Experiment([Pipeline([]), Pipeline(["pointwise:transformers:PATH"], rerank_depth=20)], data,
               names=["bm25", "pointwise"], baseline="bm25", output_dir="runs/dl19").run()

A system here is a pipeline of rerankers only (no retriever, no generator): it reranks each
query's candidates, cut to the pipeline's `k`, to its `rerank_depth`; a pipeline without
rerankers reproduces the first stage exactly. Only judged queries are run (reranking an
unjudged query costs LLM calls and scores nothing); the others are counted in stats.json,
and judged queries without candidates score 0.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from typing import Any

from personarag.errors import InputError
from personarag.evaluation.candidates import Candidates
from personarag.evaluation.qrels import Qrels
from personarag.experiment.datasets import RankingDataset, _part, content_hash, ranking_records
from personarag.types import Document, Query, Ranking, ScoredDoc, Usage

logger = logging.getLogger(__name__)

DEFAULT_MEASURES = ("nDCG@10", "MRR@10", "Recall@100", "MAP")


def at_relevance_level(measure: str, level: int | None) -> str:
    """`measure` with `(rel=level)` added where the measure takes a binary relevance level
    (Recall, MAP, MRR, P, ...; not nDCG, which uses the graded gains): `MRR@10` -> `MRR(rel=2)@10`,
    as `trec_eval -l 2` counts on TREC DL. Unchanged for level None or 1 or one already set."""
    from personarag.evaluation.metrics import parse_measure

    if level is None or level == 1 or "(" in measure:
        return measure
    if isinstance(level, bool) or not isinstance(level, int) or level < 1:
        raise InputError(f"relevance_level must be a positive integer, got {level!r}")
    if "rel" not in parse_measure(measure).SUPPORTED_PARAMS:
        return measure
    name, at, cutoff = measure.partition("@")
    return f"{name}(rel={level}){at}{cutoff}"


class CandidateDataset(RankingDataset):
    """First-stage candidates with qrels; systems are pipelines of rerankers only."""

    def __init__(self, candidates: Candidates, qrels: Qrels, *, name: str | None = None,
                 max_queries: int | None = None, relevance_level: int | None = None,
                 qrels_source: Any = None) -> None:
        if not isinstance(candidates, Candidates):
            raise InputError(f"expected Candidates (from read_candidates / read_trec_candidates), got {type(candidates).__name__}")
        qrels = qrels if isinstance(qrels, Qrels) else Qrels(qrels)
        self.candidates = candidates
        self.coverage = candidates.coverage(qrels)
        queries = [q for q in candidates.queries if q.id in qrels]
        if self.coverage["not_in_qrels"]:
            logger.info("%s: %d of %d candidate queries have no judgements; they are not run",
                        candidates.source, self.coverage["not_in_qrels"], len(candidates))
        if max_queries is not None:
            queries = queries[:max_queries]
            qrels = qrels.subset(q.id for q in queries)
        elif self.coverage["judged_without_candidates"]:
            logger.warning("%d judged queries have no candidates in %s; they score 0",
                           self.coverage["judged_without_candidates"], candidates.source)
        if not queries:
            raise InputError(f"{candidates.source}: none of its {len(candidates)} queries is judged in the qrels "
                             f"({qrels.source}); check that the qids match")
        self.name, self.qrels, self.queries = name or candidates.name, qrels, queries
        self.excluded: dict[str, Any] = {}
        self.corpus = {d.doc.id: d.doc for r in candidates.rankings for d in r.docs}
        self.relevance_level = relevance_level
        self.default_measures = tuple(at_relevance_level(m, relevance_level) for m in DEFAULT_MEASURES)
        self.data = {
            "candidates": _part(content_hash(_ranking_row(r) for r in candidates.rankings), candidates.source),
            "qrels": _part(content_hash((q, sorted(qrels[q].items())) for q in qrels), qrels_source or qrels.source),
        }

    @classmethod
    def from_files(cls, candidates: Any, qrels: Any, **options: Any) -> CandidateDataset:
        """From a request file path (or Candidates) and a qrels file path (or Qrels)."""
        from personarag.evaluation.candidates import read_candidates

        first = candidates if isinstance(candidates, Candidates) else read_candidates(candidates)
        judged = qrels if isinstance(qrels, Qrels) else Qrels.read(qrels)
        return cls(first, judged, **options)

    def check(self, pipeline: Any) -> None:
        if pipeline.retriever is not None:
            raise InputError(
                f"{self.name}: the candidates are the first stage; give rerankers only, not the retriever "
                f"{pipeline.retriever.spec_name or pipeline.retriever!r}"
            )
        if pipeline.generator is not None:
            raise InputError(f"{self.name} scores rankings; this pipeline ends in a generator ({pipeline.generator!r})")

    def prepare(self, pipeline: Any) -> None:
        """A warm-up outside the timed batches: the rerankers rerank a made-up query with two made-up
        passages once, so loading a model is not billed to the first queries' seconds (and, unlike
        a real query, leaves no LLM cache entry that a real query would then hit)."""
        if pipeline.rerankers:
            docs = tuple(ScoredDoc(Document(id=f"personarag-warm-up-{i}", text=f"warm-up passage {i}"), float(-i))
                         for i in range(2))
            warm = [Ranking(query=Query(id="personarag-warm-up", text="warm-up query"), docs=docs)]
            for reranker in pipeline.rerankers:
                warm = reranker.rerank(warm)

    def run_batch(self, pipeline: Any, queries: list[Query]) -> list[tuple[dict[str, Any], ...]]:
        started = time.perf_counter()
        rankings = [self.candidates[q.id].top(pipeline.k) for q in queries]
        for reranker in pipeline.rerankers:
            rankings = reranker.rerank(rankings, depth=pipeline.rerank_depth)
        return ranking_records(queries, rankings, seconds=time.perf_counter() - started)

    def stats(self, result: Any, ran: int, seconds: Any, usage: Usage) -> dict[str, Any]:
        stats = super().stats(result, ran, seconds, usage)
        stats["documents"] = len(self.corpus)
        stats["candidates"] = {**self.coverage, "depth": self.candidates.depth, "source": self.candidates.source}
        stats["seconds"] = {"rerank": stats["seconds"]["retrieve"]}
        return stats


def _ranking_row(ranking: Any) -> list[Any]:
    return [ranking.query.id, ranking.query.text,
            [[d.doc.id, d.doc.title, d.doc.text, d.score] for d in ranking.docs]]


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def measures_at_level(measures: Sequence[str], level: int | None) -> list[str]:
    return [at_relevance_level(m, level) for m in measures]
