"""The HTTP API: `create_app(pipeline, store, settings)` returns a FastAPI app (docs at /docs).

Endpoints (JSON): GET /healthz, GET /readyz; POST /v1/users/{user_id}/items (add or update,
idempotent by item id), DELETE /v1/users/{user_id}/items/{item_id}, DELETE /v1/users/{user_id}
(the user, their items, vectors and index entries), GET /v1/users/{user_id}; POST /v1/query,
POST /v1/query:batch, POST /v1/rerank (rank_llm / Ragnarok shape in and out).

Rules: an unknown user is a 404 (reads, deletes and queries alike: no silent empty history;
adding items creates the user); invalid input a 422 naming the field; a body over
`max_body_bytes` a 413; a model failure a 500 naming the cause, a model slower than
`timeout` a 504. With a token set (`token_env`, read once at start), every /v1 call needs
`Authorization: Bearer TOKEN`, compared in constant time and never logged. Model work runs on
one worker thread (`MicroBatcher`); store reads and writes on the thread pool, each write one
transaction, so a client that disconnects leaves either the whole write or none.
"""

# no `from __future__ import annotations`: FastAPI reads the route annotations (local schemas) at runtime
import asyncio
import hmac
import os
from collections.abc import Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from personarag.errors import InputError, require
from personarag.pipeline import Pipeline
from personarag.serve.batcher import MicroBatcher
from personarag.serve.service import Answer, QueryJob, RerankJob, Service, ranked, rerank_result, trec_rag_answer
from personarag.types import Document, Query


@dataclass(frozen=True)
class Settings:
    max_k: int = 100
    max_body_bytes: int = 1_000_000
    max_batch_queries: int = 64
    max_batch: int = 32  # jobs per model call
    max_wait: float = 0.005  # seconds the worker waits for more jobs to join a batch
    timeout: float = 120.0  # seconds a request waits for the model before a 504
    token_env: str = "PERSONARAG_API_TOKEN"
    run_id: str = "personarag"


def create_app(pipeline: Pipeline, store: Any, settings: Settings | None = None) -> Any:
    require("fastapi", "serve", purpose="personarag serve")
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.responses import JSONResponse

    from personarag.serve import schemas

    settings = settings or Settings()
    token = os.environ.get(settings.token_env) or None
    service = Service(pipeline, store)
    state: dict[str, Any] = {"ready": False}

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        batcher = MicroBatcher(service.handle, max_batch=settings.max_batch, max_wait=settings.max_wait)
        state["batcher"] = batcher
        await asyncio.wrap_future(batcher.call(lambda: warm_up(pipeline)))
        state["ready"] = True
        try:
            yield
        finally:
            state["ready"] = False
            batcher.close()

    app = FastAPI(title="personarag", description=__doc__, lifespan=lifespan)
    app.state.service = service
    app.state.runtime = state

    async def authorize(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            raise HTTPException(401, "missing or wrong bearer token (header Authorization: Bearer TOKEN)",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > settings.max_body_bytes):
            return JSONResponse({"detail": f"body: {length} bytes is over the limit of {settings.max_body_bytes}"}, 413)
        if length is None and request.method in ("POST", "PUT", "PATCH"):
            body = b""
            async for chunk in request.stream():
                body += chunk
                if len(body) > settings.max_body_bytes:
                    return JSONResponse({"detail": f"body: over the limit of {settings.max_body_bytes} bytes"}, 413)
            request._body = body  # noqa: SLF001  read once here, so the route reads the cached body
        return await call_next(request)

    @app.exception_handler(InputError)
    async def input_error(request: Request, error: InputError) -> Any:
        return JSONResponse({"detail": str(error)}, 422)

    async def model(job: Any) -> Any:
        future = state["batcher"].submit(job)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), settings.timeout)
        except asyncio.TimeoutError:
            future.cancel()
            raise HTTPException(504, f"the model gave no answer within {settings.timeout:g} s") from None
        except (InputError, HTTPException):
            raise
        except Exception as error:
            raise HTTPException(500, f"model failure: {type(error).__name__}: {error}") from error

    async def load_user(user_id: str) -> Any:
        if store is None:
            raise HTTPException(404, f"user {user_id!r}: this server has no user store")
        if not await asyncio.to_thread(store.has_user, user_id):
            raise HTTPException(404, f"user {user_id!r} is not in the store")
        return await asyncio.to_thread(store.user, user_id)

    def need_store() -> Any:
        if store is None:
            raise HTTPException(409, "this server runs without a user store (start it with --store)")
        return store

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "ready": state["ready"]}

    @app.get("/readyz")
    async def readyz() -> Any:
        return JSONResponse({"ready": state["ready"]}, 200 if state["ready"] else 503)

    v1 = [Depends(authorize)]

    @app.post("/v1/users/{user_id}/items", response_model=schemas.Version, dependencies=v1)
    async def add_items(user_id: str, body: schemas.AddItems) -> Any:
        need_store()
        docs = []
        for item in body.items:
            meta = dict(item.meta)
            if item.date is not None:
                meta["date"] = item.date
            if not item.shared:
                meta["shared"] = False
            docs.append(Document(id=item.id, text=item.text, title=item.title, meta=meta))
        version = await asyncio.to_thread(store.add_items, user_id, docs)
        return {"user_id": user_id, "history_version": version}

    @app.delete("/v1/users/{user_id}/items/{item_id}", response_model=schemas.Version, dependencies=v1)
    async def delete_item(user_id: str, item_id: str) -> Any:
        user = await load_user(user_id)
        if item_id not in {d.id for d in user.history}:
            raise HTTPException(404, f"user {user_id!r} has no item {item_id!r}")
        version = await asyncio.to_thread(store.delete_item, user_id, item_id)
        return {"user_id": user_id, "history_version": version}

    @app.delete("/v1/users/{user_id}", dependencies=v1)
    async def delete_user(user_id: str) -> Any:
        if not await asyncio.to_thread(need_store().has_user, user_id):
            raise HTTPException(404, f"user {user_id!r} is not in the store")
        await asyncio.to_thread(store.delete_user, user_id)
        await asyncio.wrap_future(state["batcher"].call(lambda: sync_stages(pipeline)))  # vectors and index entries go now
        return {"user_id": user_id, "deleted": True}

    @app.get("/v1/users/{user_id}", response_model=schemas.UserInfo, dependencies=v1)
    async def get_user(user_id: str) -> Any:
        need_store()
        if not await asyncio.to_thread(store.has_user, user_id):
            raise HTTPException(404, f"user {user_id!r} is not in the store")
        user, version = await asyncio.to_thread(store.user_and_version, user_id)
        private = await asyncio.to_thread(store.private_user_ids)
        return {"user_id": user_id, "history_size": len(user.history), "history_version": version,
                "shared": user_id not in private}

    async def one_query(body: schemas.QueryRequest, where: str, default_id: str) -> dict[str, Any]:
        if not 1 <= body.k <= settings.max_k:
            raise HTTPException(422, f"{where}k: must be between 1 and {settings.max_k}, got {body.k}")
        user = await load_user(body.user_id) if body.user_id is not None else None
        query = Query(id=body.id or default_id, text=body.query, user=user)
        answer: Answer = await model(QueryJob(query, body.k, body.rerank, body.generate))
        out: dict[str, Any] = {"query_id": query.id, "user_id": body.user_id,
                               "ranking": ranked(answer.ranking.docs, answer.owners, body.return_trace)}
        if answer.output is not None:
            out["answer"] = trec_rag_answer(answer.output, settings.run_id)
        if body.similar_users:
            out["similar_users"] = [list(pair) for pair in answer.similar_users]
        if body.return_trace:
            trace = answer.ranking.trace + (answer.output.trace if answer.output is not None else ())
            out["trace"] = [_trace(t) for t in trace]
        return out

    @app.post("/v1/query", response_model=schemas.QueryResponse, response_model_exclude_none=True, dependencies=v1)
    async def query(body: schemas.QueryRequest) -> Any:
        return await one_query(body, "", "q0")

    @app.post("/v1/query:batch", response_model=schemas.BatchResponse, response_model_exclude_none=True, dependencies=v1)
    async def query_batch(body: schemas.BatchRequest) -> Any:
        if len(body.queries) > settings.max_batch_queries:
            raise HTTPException(422, f"queries: at most {settings.max_batch_queries} per batch, got {len(body.queries)}")
        results = await asyncio.gather(*(one_query(q, f"queries[{i}].", f"q{i}") for i, q in enumerate(body.queries)))
        return {"results": results}

    @app.post("/v1/rerank", dependencies=v1)
    async def rerank(request: Request) -> Any:
        from personarag.evaluation.candidates import parse_request

        try:
            body = await request.json()
        except ValueError as error:
            raise HTTPException(422, f"body: not valid JSON ({error})") from None
        ranking = parse_request(body, "body")
        if not isinstance(body, Mapping):
            raise HTTPException(422, "body: expected an object")
        hits = body.get("hits", body.get("candidates"))
        if len(hits) > settings.max_k * 10:
            raise HTTPException(422, f"body: at most {settings.max_k * 10} candidates, got {len(hits)}")
        result = await model(RerankJob(ranking))
        return rerank_result(body, result)

    return app


def _trace(trace: Any) -> dict[str, Any]:
    info = {k: v for k, v in trace.info.items() if k != "owner_of"}
    return {"stage": trace.stage, "problems": list(trace.problems), "reasoning": trace.reasoning, "info": _jsonable(info)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def _walk(pipeline: Pipeline) -> list[Any]:
    found, todo = [], list(pipeline.stages)
    while todo:
        stage = todo.pop(0)
        found.append(stage)
        todo.extend(getattr(stage, "retrievers", ()))
    return found


def sync_stages(pipeline: Pipeline) -> None:
    for stage in _walk(pipeline):
        if callable(getattr(stage, "sync", None)):
            stage.sync()


def warm_up(pipeline: Pipeline) -> None:
    """Load the models now, so the first request does not pay for it and readiness means it."""
    for stage in _walk(pipeline):
        if hasattr(stage, "item_encoder"):
            stage.item_encoder  # noqa: B018  loads the encoder
        if isinstance(getattr(type(stage), "llm", None), property):
            stage.llm.load()  # LLM weights too: readiness means the first request pays for no loading
        if callable(getattr(stage, "sync", None)):
            stage.sync()
