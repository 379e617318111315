"""`personarag run --requests`: rank_llm / Ragnarok requests in, TREC RAG answers or rank_llm
rerank results out, so personarag drops into those evaluation pipelines.

    personarag run --requests requests.jsonl --config pipeline.yaml [--store users.db] --output out.jsonl

Each request (`query`: a string or {qid, text}; `candidates` or `hits`; optional `user_id`,
read from the store) has its candidates reranked by the pipeline's rerankers; with a
generator, the top `context_k` become the context of a TREC RAG 2024 answer (`run_id`,
`topic_id`, `topic`, `references`, `response_length`, `answer: [{text, citations}]`),
otherwise the line is the request reordered with new scores and ranks. Resumable: requests
whose id is already in OUTPUT are skipped (a torn last line is dropped first); each line is
flushed and fsynced as it is written.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from personarag.errors import InputError

GROUP = None
NAME = "run"
HELP = "run a pipeline over rank_llm/Ragnarok requests: TREC RAG answers or rank_llm rerank results"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", required=True, metavar="FILE.jsonl", help="rank_llm / Ragnarok requests (JSONL or JSON list)")
    parser.add_argument("--config", required=True, metavar="PIPELINE.yaml", help="a pipeline config (Pipeline.save)")
    parser.add_argument("--store", default=os.environ.get("PERSONARAG_STORE"), metavar="STORE",
                        help="user store for requests with a user_id (default: $PERSONARAG_STORE)")
    parser.add_argument("--output", required=True, metavar="OUT.jsonl")
    parser.add_argument("--run-id", default="personarag", help="run_id of TREC RAG answers")
    parser.add_argument("--batch-size", type=int, default=8, metavar="N")


def done_ids(path: Path) -> set[str]:
    """Ids already answered; a torn last line (no newline) is cut off the file."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        with path.open("r+b") as handle:
            handle.truncate(len(data))
    ids = set()
    for line in data.decode("utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            ids.add(str(record["topic_id"]) if "topic_id" in record else str(record["query"]["qid"]))
    return ids


def run_requests(requests: str | Path, pipeline: Any, output: str | Path, *, store: Any = None,
                 run_id: str = "personarag", batch_size: int = 8) -> dict[str, int]:
    from personarag.evaluation.candidates import iter_requests, parse_request
    from personarag.serve.service import Service, rerank_result, trec_rag_answer
    from personarag.types import Query, Ranking

    service = Service(pipeline, store)
    if not pipeline.rerankers and pipeline.generator is None:
        raise InputError("the pipeline has neither a reranker nor a generator: nothing to do with the requests")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    done = done_ids(output)
    todo: list[tuple[dict[str, Any], Ranking]] = []
    for where, record in iter_requests(requests):
        ranking = parse_request(record, where)
        if ranking.query.id in done:
            continue
        user_id = record.get("user_id")
        if user_id is not None:
            if store is None:
                raise InputError(f"{where}: request has user_id {user_id!r} but no --store was given")
            if not store.has_user(str(user_id)):
                raise InputError(f"{where}: user_id {user_id!r} is not in {store.url}")
            ranking = Ranking(Query(ranking.query.id, ranking.query.text, store.user(str(user_id))), ranking.docs, ranking.trace)
        todo.append((record, ranking))
    written = 0
    with output.open("a", encoding="utf-8") as handle:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            rankings = service.rerank([r for _, r in batch]) if pipeline.rerankers else [r for _, r in batch]
            if pipeline.generator is not None:
                outputs = pipeline.generator.generate([r.top(pipeline.context_k) for r in rankings])
                lines = [trec_rag_answer(o, run_id) for o in outputs]
            else:
                lines = [rerank_result(record, r) for (record, _), r in zip(batch, rankings)]
            handle.write("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
            handle.flush()
            os.fsync(handle.fileno())
            written += len(lines)
    return {"done_before": len(done), "written": written}


def run(args: argparse.Namespace) -> int:
    from personarag.pipeline import Pipeline

    store = None
    if args.store:
        from personarag.personal.store import UserStore

        store = UserStore(args.store)
    pipeline = Pipeline.load(args.config).validate()
    counts = run_requests(args.requests, pipeline, args.output, store=store, run_id=args.run_id, batch_size=args.batch_size)
    print(f"{args.output}: {counts['written']} written, {counts['done_before']} already there")
    return 0
