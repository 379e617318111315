"""Encode a large user store's history items on a Ray cluster, into the store's embedding cache.

    from functools import partial
    from personarag.personal.item_embeddings import load_item_encoder
    from personarag.personal.ray_encode import encode_store_items

    report = encode_store_items(UserStore("postgresql://..."), partial(load_item_encoder, MODEL, device="cuda"),
                                actors=8, num_gpus=1, address="auto")

Only the items whose (encoder fingerprint, content hash) the cache lacks are sent; each actor
loads the encoder once. Vectors come back batch by batch and are written to the store by this
process as they arrive, so a run stopped midway keeps what it encoded and a rerun encodes the
rest. Afterwards every history retriever or user-vector fit with the same encoder finds all its
item embeddings cached and encodes nothing.

`encoder_factory`: a picklable zero-argument callable that returns an item encoder: an object
with `fingerprint.key` (a string naming the model, its weights and the options that change
vectors) and `encode(texts) -> (n, dim) float32 unit rows` (`ItemEncoder` does). Each actor
checks that its encoder's key is the one the cache is read under, so a node with other weights
cannot write vectors under the wrong key.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from personarag.errors import InputError

logger = logging.getLogger(__name__)

_READ_CHUNK = 900  # hashes per cache lookup


@dataclass(frozen=True)
class EncodeReport:
    fingerprint: str
    items: int  # distinct item texts in the users read
    cached: int  # already in the cache
    encoded: int  # encoded by the actors and written now
    seconds: float


class EncoderActor:
    """One per Ray worker: the encoder loaded once, then batches of texts."""

    def __init__(self, encoder_factory: Callable[[], Any], fingerprint: str) -> None:
        self.encoder = encoder_factory()
        key = self.encoder.fingerprint.key
        if key != fingerprint:
            raise InputError(f"this worker's encoder has fingerprint {key!r}, the run reads and writes {fingerprint!r}: "
                             "the model files differ between nodes")

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        texts = [str(t) for t in batch["text"]]
        vectors = np.asarray(self.encoder.encode(texts), dtype=np.float32)
        if vectors.shape[0] != len(texts):
            raise InputError(f"the encoder returned {vectors.shape[0]} vectors for {len(texts)} texts")
        return {"hash": np.asarray(batch["hash"], dtype=object), "vector": vectors}


def missing_items(store: Any, fingerprint: str, user_ids: Iterable[str] | None = None) -> tuple[int, dict[str, str]]:
    """(distinct items read, {content hash: text} of those the cache lacks under `fingerprint`)."""
    from personarag.personal.store import content_hash

    texts: dict[str, str] = {}
    for user in store.users(user_ids):
        for doc in user.history:
            texts.setdefault(content_hash(doc), doc.full_text)
    hashes = list(texts)
    cached: set[str] = set()
    for start in range(0, len(hashes), _READ_CHUNK):
        cached.update(store.get_embeddings(fingerprint, hashes[start:start + _READ_CHUNK]))
    return len(texts), {h: t for h, t in texts.items() if h not in cached}


def encode_store_items(
    store: Any,
    encoder_factory: Callable[[], Any],
    *,
    fingerprint: str | None = None,
    user_ids: Iterable[str] | None = None,
    batch_size: int = 256,
    actors: int | None = None,
    num_cpus: float = 1,
    num_gpus: float = 0,
    address: str | None = None,
    init: Mapping[str, Any] | None = None,
) -> EncodeReport:
    """Encode the items of `user_ids` (default: every user) that the store's cache lacks, on Ray.

    `fingerprint`: the encoder's key when known; otherwise `encoder_factory` is called once here
    to read it (that loads the model in this process too). `actors` defaults to one per alive
    node; `num_cpus`/`num_gpus` are per actor. Without `address` and no Ray initialised in this
    process, a local cluster is started and shut down afterwards.
    """
    from personarag.experiment.ray_engine import check_options, cluster, input_errors

    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    check_options({"actors": actors, "num_cpus": num_cpus, "num_gpus": num_gpus})
    started = time.perf_counter()
    key = fingerprint if fingerprint is not None else encoder_factory().fingerprint.key
    if not isinstance(key, str) or not key:
        raise InputError(f"the encoder fingerprint must be a non-empty string, got {key!r}")
    total, todo = missing_items(store, key, user_ids)
    logger.info("%d distinct items, %d cached, %d to encode", total, total - len(todo), len(todo))
    encoded = 0
    if todo:
        with cluster(address, init) as ray:
            context = ray.data.DataContext.get_current()
            context.enable_progress_bars = False
            pool = actors or max(1, sum(1 for node in ray.nodes() if node.get("Alive")))
            pool = min(pool, -(-len(todo) // batch_size))
            # sorted by length: a batch of similar lengths pads little
            rows = [{"hash": h, "text": todo[h]} for h in sorted(todo, key=lambda h: len(todo[h]))]
            vectors = ray.data.from_items(rows).map_batches(
                EncoderActor, fn_constructor_args=(encoder_factory, key), batch_size=batch_size,
                compute=ray.data.ActorPoolStrategy(size=pool), num_cpus=num_cpus, num_gpus=num_gpus)
            with input_errors(ray):
                for batch in vectors.iter_batches(batch_size=None, batch_format="numpy"):
                    store.put_embeddings(key, dict(zip((str(h) for h in batch["hash"]), batch["vector"])))
                    encoded += len(batch["hash"])
    return EncodeReport(key, total, total - len(todo), encoded, round(time.perf_counter() - started, 3))
