"""Reasoning traces written next to a run file.

`write_reasoning(rankings, path)` writes one JSON object per line:
`{"query_id", "doc_id", "stage", "reasoning"}`. Per-document reasoning (from
`ScoredDoc.reasoning`) is attributed to the last stage of the ranking that produced it
(the stage whose docs these are); stage-level reasoning (a listwise window, a setwise
comparison, every stage's `StageTrace.reasoning`) is written with `doc_id: null`.
The raw model answers a stage kept (`StageTrace.info["answers"]`: listwise windows,
setwise choices, groupwise groups, with or without reasoning) follow as rows
`{"query_id", "doc_id": null, "stage", "where", "answer"}`, so what the model said is
readable without the LLM cache. Rows come in ranking order, so the file is stable for one run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from personarag.types import Ranking


def reasoning_rows(rankings: Iterable[Ranking]) -> list[dict[str, str | None]]:
    rows: list[dict[str, str | None]] = []
    for ranking in rankings:
        qid = ranking.query.id
        for trace in ranking.trace:
            if trace.reasoning:
                rows.append({"query_id": qid, "doc_id": None, "stage": trace.stage, "reasoning": trace.reasoning})
            for answer in trace.info.get("answers", ()):
                rows.append({"query_id": qid, "doc_id": None, "stage": trace.stage, "where": answer["where"], "answer": answer["text"]})
        last_stage = ranking.trace[-1].stage if ranking.trace else None
        for scored in ranking.reasoned:
            if scored.reasoning:
                rows.append({"query_id": qid, "doc_id": scored.doc.id, "stage": last_stage, "reasoning": scored.reasoning})
    return rows


def write_reasoning(rankings: Iterable[Ranking], path: str | Path) -> Path:
    """Write the reasoning of `rankings` as JSONL to `path` (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in reasoning_rows(rankings):
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
