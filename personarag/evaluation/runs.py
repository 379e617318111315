"""Runs: each query's ranked (doc id, score) list, and TREC run files.

A Run keeps the order it was given: the order of a Ranking is what the system decided
(a reranker may keep a tail whose old scores exceed its new ones), so metrics score that
order, not a re-sort by score. Only unordered inputs (score dicts, TREC files) are sorted:
by rank column when there is one, then score descending, then doc id, so ties always
resolve the same way.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from personarag.errors import InputError
from personarag.evaluation.jsonl import iter_lines
from personarag.evaluation.tables import QueryTable
from personarag.types import Ranking

logger = logging.getLogger(__name__)


class Run(QueryTable[list[tuple[str, float]]]):
    """query id -> ranked [(doc id, score)], best first; queries in insertion order."""

    def __init__(self, ranked: Mapping[str, Sequence[tuple[str, float]]], *, name: str = "personarag") -> None:
        data: dict[str, list[tuple[str, float]]] = {}
        for query_id, docs in ranked.items():
            if not isinstance(query_id, str) or not query_id:
                raise InputError(f"run {name!r}: query ids must be non-empty strings, got {query_id!r}")
            if isinstance(docs, Mapping):
                raise InputError(
                    f"run {name!r}: query {query_id!r}: got a {{doc: score}} mapping, which has no order; "
                    "use Run.from_scores for that, or pass a ranked list of (doc_id, score)"
                )
            seen: set[str] = set()
            row: list[tuple[str, float]] = []
            for position, item in enumerate(docs):
                try:
                    if isinstance(item, (str, bytes)):
                        raise TypeError
                    doc_id, score = item
                except (TypeError, ValueError):
                    raise InputError(
                        f"run {name!r}: query {query_id!r}, position {position}: expected (doc_id, score), got {item!r}"
                    ) from None
                if not isinstance(doc_id, str) or not doc_id:
                    raise InputError(f"run {name!r}: query {query_id!r}: doc ids must be non-empty strings, got {doc_id!r}")
                if doc_id in seen:
                    raise InputError(f"run {name!r}: query {query_id!r} ranks document {doc_id!r} twice")
                seen.add(doc_id)
                row.append((doc_id, float(score)))
            data[query_id] = row
        self._data = data
        self.name = name

    @classmethod
    def from_rankings(cls, rankings: Iterable[Ranking], *, name: str = "personarag") -> Run:
        data: dict[str, list[tuple[str, float]]] = {}
        for position, ranking in enumerate(rankings):
            if not isinstance(ranking, Ranking):
                raise InputError(f"rankings[{position}] is a {type(ranking).__name__}, expected Ranking")
            if ranking.query.id in data:
                raise InputError(f"rankings[{position}]: query {ranking.query.id!r} appears twice")
            data[ranking.query.id] = list(zip(ranking.ids, ranking.scores))  # builds no ScoredDocs of lazy rankings
        return cls(data, name=name)

    @classmethod
    def from_scores(cls, scores: Mapping[str, Mapping[str, float]], *, name: str = "personarag") -> Run:
        """From unordered {query: {doc: score}}: sorted by score descending, ties by doc id."""
        return cls(
            {q: sorted(docs.items(), key=lambda item: (-float(item[1]), item[0])) for q, docs in scores.items()},
            name=name,
        )

    @classmethod
    def read_trec(cls, path: str | Path) -> Run:
        """`qid Q0 docid rank score name` per line; whitespace separated."""
        path = Path(path)
        rows: dict[str, list[tuple[int, float, str]]] = {}
        seen: dict[str, set[str]] = {}
        names: set[str] = set()
        for line_number, line in iter_lines(path, "run file"):
            fields = line.split()
            where = f"{path}:{line_number}"
            if len(fields) != 6:
                raise InputError(f"{where}: expected 6 columns (qid Q0 docid rank score name), got {len(fields)}: {line.rstrip()!r}")
            query_id, _, doc_id, rank_text, score_text, run_name = fields
            try:
                rank = int(rank_text)
            except ValueError:
                raise InputError(f"{where}: rank must be an integer, got {rank_text!r}") from None
            try:
                score = float(score_text)
            except ValueError:
                raise InputError(f"{where}: score must be a number, got {score_text!r}") from None
            if doc_id in seen.setdefault(query_id, set()):
                raise InputError(f"{where}: document {doc_id!r} is ranked twice for query {query_id!r}")
            seen[query_id].add(doc_id)
            rows.setdefault(query_id, []).append((rank, score, doc_id))
            names.add(run_name)
        if not rows:
            raise InputError(f"{path}: the run file is empty")
        ranked = {
            q: [(doc, score) for _, score, doc in sorted(items, key=lambda r: (r[0], -r[1], r[2]))]
            for q, items in rows.items()
        }
        return cls(ranked, name=sorted(names)[0] if len(names) == 1 else path.stem)

    def write_trec(self, path: str | Path, name: str | None = None, *, scores: str = "monotone") -> Path:
        """Ranks are 1-based positions in this run's order.

        trec_eval ignores the rank column and re-sorts by score (ties by doc id), so by default
        (`scores="monotone"`) a score that does not fall below the one above it (a reranker that
        keeps the retriever's tail below its head, or ties) is written as the next float below it:
        trec_eval then scores exactly this order. `scores="kept"` writes the scores unchanged."""
        if scores not in ("monotone", "kept"):
            raise InputError(f"scores must be 'monotone' or 'kept', got {scores!r}")
        run_name = name or self.name
        if not run_name or any(c.isspace() for c in run_name):
            raise InputError(f"a TREC run name must be non-empty without spaces, got {run_name!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        adjusted = 0
        with path.open("w", encoding="utf-8", newline="\n") as handle:
            for query_id, docs in self._data.items():
                written = docs if scores == "kept" else _strictly_falling(docs)
                adjusted += written is not docs
                for rank, (doc_id, score) in enumerate(written, start=1):
                    handle.write(f"{query_id} Q0 {doc_id} {rank} {score!r} {run_name}\n")
        if adjusted:
            logger.info("%s: in %d queries scores were lowered below the score above them so that trec_eval, "
                        "which re-sorts by score, scores the ranked order", path, adjusted)
        elif scores == "kept" and any(b[1] >= a[1] for docs in self._data.values() for a, b in zip(docs, docs[1:])):
            logger.warning("%s: scores rise or tie down some rankings; trec_eval re-sorts by score, so it would "
                           "score a different order than personarag's evaluate, which keeps the ranks", path)
        return path

    def __getitem__(self, query_id: str) -> list[tuple[str, float]]:
        return list(self._data[query_id])

    def top(self, k: int) -> Run:
        return Run({q: docs[:k] for q, docs in self._data.items()}, name=self.name)

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {q: dict(docs) for q, docs in self._data.items()}

    def __repr__(self) -> str:
        return f"Run({self.name!r}, {len(self)} queries)"


def _strictly_falling(docs: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """`docs` itself when its scores strictly fall, else a copy where each score that does not is
    set a millionth (relative, at least 1e-6) below the written score above it. The step is that
    large, not one float apart, because pytrec_eval compares scores in single precision."""
    if all(_single(b[1]) < _single(a[1]) for a, b in zip(docs, docs[1:])):
        return docs
    out = list(docs[:1])
    for doc_id, score in docs[1:]:
        above = out[-1][1]
        if _single(score) >= _single(above):
            score = above - max(abs(above), 1.0) * 1e-6
        out.append((doc_id, float(score)))
    return out


def _single(value: float) -> float:
    try:
        return struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:  # beyond single precision's range
        return math.copysign(math.inf, value)
