"""What the server does with a pipeline and a user store, without HTTP: run query and rerank
jobs in batches, resolve who owns each item, enforce the sharing rules, and write the
standard output shapes (TREC RAG 2024 answers, rank_llm rerank results).

Used by the app (through the micro-batcher's worker thread) and by `personarag run --requests`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from personarag.errors import InputError
from personarag.pipeline import Pipeline
from personarag.types import Output, Query, Ranking, ScoredDoc


@dataclass(frozen=True)
class QueryJob:
    query: Query
    k: int
    rerank: bool = True
    generate: bool = True


@dataclass(frozen=True)
class RerankJob:
    ranking: Ranking


@dataclass(frozen=True)
class Answer:
    """One query's result: its ranking with the owner of each document, and the Output when generated."""

    ranking: Ranking
    owners: tuple[str | None, ...]
    output: Output | None = None
    dropped: int = 0  # documents withheld by the sharing rules (should be 0: the retrievers honour them)
    similar_users: tuple[tuple[str, float], ...] = field(default=())


class Service:
    def __init__(self, pipeline: Pipeline, store: Any = None) -> None:
        self.pipeline = pipeline
        self.store = store

    # -- batches -----------------------------------------------------------------------
    def handle(self, jobs: list[Any]) -> list[Any]:
        """One result per job (an exception object for a job that failed on its own)."""
        results: list[Any] = [None] * len(jobs)
        groups: dict[Any, list[int]] = {}
        for position, job in enumerate(jobs):
            key = ("rerank",) if isinstance(job, RerankJob) else ("query", job.rerank, job.generate)
            groups.setdefault(key, []).append(position)
        for key, positions in groups.items():
            if key[0] == "rerank":
                rankings = self.rerank([jobs[p].ranking for p in positions])
                for p, ranking in zip(positions, rankings):
                    results[p] = ranking
            else:
                answers = self.query([jobs[p] for p in positions], rerank=key[1], generate=key[2])
                for p, answer in zip(positions, answers):
                    results[p] = answer
        return results

    def query(self, jobs: Sequence[QueryJob], *, rerank: bool = True, generate: bool = True) -> list[Answer]:
        pipeline = self.pipeline
        queries = [job.query for job in jobs]
        if pipeline.retriever is None:
            rankings = [Ranking(query=q, docs=()) for q in queries]
        else:
            rankings = pipeline.retriever.retrieve(queries, k=max(pipeline.k, max(job.k for job in jobs)))
        answers = [self._private_filter(r) for r in rankings]
        rankings = [a.ranking for a in answers]
        if rerank:
            for reranker in pipeline.rerankers:
                rankings = reranker.rerank(rankings, depth=reranker.depth or pipeline.rerank_depth)
        outputs: list[Output | None] = [None] * len(rankings)
        if generate and pipeline.generator is not None:
            outputs = list(pipeline.generator.generate([r.top(pipeline.context_k) for r in rankings]))
        out = []
        for job, answer, ranking, output in zip(jobs, answers, rankings, outputs):
            owner_of = dict(zip((d.id for d in answer.ranking.docs), answer.owners))
            top = ranking.top(job.k)
            out.append(Answer(top, tuple(owner_of.get(d.id) for d in top.docs), output, answer.dropped, answer.similar_users))
        return out

    def rerank(self, rankings: Sequence[Ranking]) -> list[Ranking]:
        if not self.pipeline.rerankers:
            raise InputError("this pipeline has no reranker; /v1/rerank and rerank requests need one in its stages")
        out = list(rankings)
        for reranker in self.pipeline.rerankers:
            out = reranker.rerank(out, depth=reranker.depth or self.pipeline.rerank_depth)
        return out

    # -- privacy -----------------------------------------------------------------------
    def _private_filter(self, ranking: Ranking) -> Answer:
        """Owners of the retrieved documents, and a last check of the sharing rules: another user's
        item reaches this query only when it is shared and its owner is shared."""
        user = ranking.query.user
        own = {d.id for d in user.history} if user is not None else set()
        owner_of: dict[str, str] = {}
        similar: list[tuple[str, float]] = []
        for trace in ranking.trace:
            owner_of.update(trace.info.get("owner_of", {}))
            similar.extend(tuple(pair) for pair in trace.info.get("similar_users", ()))
        private = self.store.private_user_ids() if self.store is not None and user is not None else set()
        kept, owners, dropped = [], [], 0
        for scored in ranking.docs:
            owner = user.id if scored.id in own and user is not None else owner_of.get(scored.id)
            foreign = user is not None and owner is not None and owner != user.id
            if foreign and (owner in private or scored.doc.meta.get("shared", True) is False):
                dropped += 1
                continue
            kept.append(scored)
            owners.append(owner)
        return Answer(Ranking(ranking.query, tuple(kept), ranking.trace), tuple(owners), None, dropped, tuple(similar))


# -- standard output shapes -------------------------------------------------------------
_CITE = re.compile(r"\[(\d+)\]")


def trec_rag_answer(output: Output, run_id: str) -> dict[str, Any]:
    """TREC RAG 2024 answer: `references` are the context doc ids; each sentence of the answer
    cites the references it marks as [n] (1-based, as in the prompt); an answer that marks none
    is one segment citing nothing."""
    references = [d.id for d in output.context]
    text = output.text.strip()
    segments = [s for s in re.split(r"(?<=[.!?])\s+", text) if s] or [text]
    answer = []
    for sentence in segments:
        cited = sorted({int(n) - 1 for n in _CITE.findall(sentence) if 0 < int(n) <= len(references)})
        bare = re.sub(r"\s+([.,;:!?])", r"\1", _CITE.sub("", sentence)).strip()
        answer.append({"text": bare or sentence, "citations": cited})
    return {
        "run_id": run_id,
        "topic_id": output.query.id,
        "topic": output.query.text,
        "references": references,
        "response_length": len(text.split()),
        "answer": answer,
    }


def rerank_result(request: Mapping[str, Any], ranking: Ranking) -> dict[str, Any]:
    """The request's own shape (`hits` or `candidates`, each hit as given) reordered, with new
    `score` and `rank`."""
    key = "hits" if "hits" in request else "candidates"
    given = {str(hit["docid"]): hit for hit in request[key] if isinstance(hit, Mapping)}
    hits = [{**given.get(d.id, {"docid": d.id}), "score": d.score, "rank": rank} for rank, d in enumerate(ranking.docs, 1)]
    return {**{k: v for k, v in request.items() if k != key}, key: hits}


def ranked(docs: Sequence[ScoredDoc], owners: Sequence[str | None], reasoning: bool) -> list[dict[str, Any]]:
    out = []
    for rank, (scored, owner) in enumerate(zip(docs, owners), 1):
        entry: dict[str, Any] = {"id": scored.id, "score": scored.score, "rank": rank, "owner": owner,
                                 "text": scored.doc.text, "title": scored.doc.title}
        if reasoning:
            entry["reasoning"] = scored.reasoning
        out.append(entry)
    return out
