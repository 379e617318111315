"""`personarag serve`: the personalized pipeline over HTTP (FastAPI under uvicorn; docs at /docs).

    personarag serve --config pipeline.yaml --store users.db [--host 127.0.0.1 --port 8000]

The pipeline config is a `Pipeline.save` file (YAML or JSON); stages that search user
histories (collaborative) are bound to the store. The server refuses to start, saying why,
when the store cannot be opened or a model cannot be loaded. Set $PERSONARAG_API_TOKEN to
require `Authorization: Bearer TOKEN` on every /v1 call.
"""

from __future__ import annotations

import argparse
import logging
import os

from personarag.errors import InputError

GROUP = None
NAME = "serve"
HELP = "serve a personalized pipeline over HTTP (FastAPI): users, items, query, rerank"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="PIPELINE.yaml", help="a pipeline config (Pipeline.save)")
    parser.add_argument("--store", default=os.environ.get("PERSONARAG_STORE"), metavar="STORE",
                        help="user store: path, sqlite:///path.db or postgresql://... (default: $PERSONARAG_STORE)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-k", type=int, default=100, help="largest k a query may ask for (default: 100)")
    parser.add_argument("--max-body-bytes", type=int, default=1_000_000)
    parser.add_argument("--max-batch", type=int, default=32, help="queries per model call (default: 32)")
    parser.add_argument("--token-env", default="PERSONARAG_API_TOKEN", metavar="VAR",
                        help="environment variable holding the bearer token (unset: no auth)")


def load(config: str, store_location: str | None) -> tuple[object, object]:
    """The pipeline, bound to the store and with its models loaded, or an InputError saying why not."""
    from personarag.pipeline import Pipeline
    from personarag.personal.store import UserStore
    from personarag.serve.app import warm_up

    store = UserStore(store_location) if store_location else None
    pipeline = Pipeline.load(config).validate()
    if store is not None:
        pipeline.fit(store=store)
    try:
        warm_up(pipeline)
    except Exception as error:
        raise InputError(f"{config}: the pipeline's models could not be loaded: {type(error).__name__}: {error}") from error
    return pipeline, store


def run(args: argparse.Namespace) -> int:
    from personarag.errors import require
    from personarag.serve.app import Settings, create_app

    uvicorn = require("uvicorn", "serve", purpose="personarag serve")
    pipeline, store = load(args.config, args.store)
    settings = Settings(max_k=args.max_k, max_body_bytes=args.max_body_bytes, max_batch=args.max_batch, token_env=args.token_env)
    app = create_app(pipeline, store, settings)
    logger.info("serving %s on http://%s:%d (auth: %s)", args.config, args.host, args.port,
                "bearer token" if os.environ.get(args.token_env) else "none")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
