"""The oracle reranker: candidates ordered by their judged grade, the upper bound of a reranker
over a first stage (what a perfect reranker of the top `depth` would reach). It reads the qrels,
so it belongs in comparison tables as a reference row, never in a system.
"""

from __future__ import annotations

from pathlib import Path

from personarag.errors import InputError
from personarag.rerankers.base import Reranker
from personarag.types import Ranking, ScoredDoc, StageTrace


class OracleReranker(Reranker):
    """Sort by qrels grade (higher first; unjudged as 0); ties keep the input order. Scores are the grades."""

    spec_name = "oracle"

    def __init__(self, qrels: str) -> None:
        if not isinstance(qrels, str) or not Path(qrels).is_file():
            raise InputError(f"the oracle reranker needs the path of a qrels file, got {qrels!r}")
        from personarag.evaluation.qrels import Qrels

        self.qrels_path = qrels
        self._qrels = Qrels.read(qrels)

    def _rerank(self, rankings: list[Ranking]) -> list[Ranking]:
        out = []
        for ranking in rankings:
            judged = self._qrels.get(ranking.query.id, {})
            order = sorted(range(len(ranking.docs)), key=lambda i: -judged.get(ranking.docs[i].doc.id, 0))
            docs = [ScoredDoc(ranking.docs[i].doc, float(judged.get(ranking.docs[i].doc.id, 0))) for i in order]
            out.append(ranking.with_stage(docs, StageTrace(stage="oracle")))
        return out
