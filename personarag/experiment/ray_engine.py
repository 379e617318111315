"""The Ray engine of `Experiment(..., engine="ray")`: a run's unfinished queries sharded over a cluster.

    Experiment(pipeline, data, output_dir="runs/x", engine="ray",
               ray_address="auto", ray_options={"actors": 4, "num_gpus": 1}).run()

The query ids go into a Ray Dataset; `map_batches` sends batches of `batch_size` ids to a pool
of `PipelineActor`s. Each actor builds the pipeline once from its config and prepares it once
(indexes the corpus, fits the user pool), then runs `dataset.run_batch` on each batch: the very
code a local run calls. Its records come back as JSON lines, in query order, and the runner
appends them through the same per-query result files as a local run, so outputs are the same
and a rerun (local or Ray) sends only the queries still unfinished.

`ray_options`: `actors` (pool size; default: the cluster's alive nodes), `num_cpus` and
`num_gpus` per actor (vLLM with tensor parallelism N: `num_gpus=N`), `progress` (Ray's bars),
`init` (extra `ray.init` keywords, e.g. `runtime_env`). Without `ray_address` and no Ray
already initialised in this process, a local cluster is started and shut down after the run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from personarag.errors import InputError, require

logger = logging.getLogger(__name__)

OPTIONS = ("actors", "num_cpus", "num_gpus", "progress", "init")


def check_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    options = dict(options or {})
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InputError(f"ray_options: unknown keys {unknown}; expected some of {list(OPTIONS)}")
    actors = options.get("actors")
    if actors is not None and (not isinstance(actors, int) or isinstance(actors, bool) or actors < 1):
        raise InputError(f"ray_options['actors'] must be a positive integer, got {actors!r}")
    for key in ("num_cpus", "num_gpus"):
        value = options.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise InputError(f"ray_options[{key!r}] must be a non-negative number, got {value!r}")
    return options


@contextmanager
def cluster(address: str | None, init: Mapping[str, Any] | None = None) -> Iterator[Any]:
    """Ray, connected: to `address` ("auto", "ray://host:10001", ...), to the Ray this process
    already initialised, or to a local cluster started here (and shut down on exit)."""
    ray = require("ray", "ray", purpose="engine='ray'")
    if ray.is_initialized():
        yield ray
        return
    ray.init(address=address, include_dashboard=False, **dict(init or {}))
    try:
        yield ray
    finally:
        ray.shutdown()


@contextmanager
def input_errors(ray: Any) -> Iterator[None]:
    """An `InputError` raised in an actor (bad data, a model path missing on a node) comes out as
    an `InputError` here, as in a local run, instead of Ray's wrapper (which may keep only its text)."""
    try:
        yield
    except ray.exceptions.RayError as error:
        seen: Any = error
        while seen is not None:
            if isinstance(seen, InputError):
                raise InputError(str(seen)) from error
            seen = getattr(seen, "cause", None) or seen.__cause__
        marker = f"{InputError.__module__}.{InputError.__name__}: "
        text = str(error)
        if marker in text:
            raise InputError(text.rsplit(marker, 1)[1].strip().splitlines()[0]) from error
        raise


class PipelineActor:
    """One per Ray worker: the pipeline built and prepared once, then batch after batch."""

    def __init__(self, pipeline_spec: tuple[str, Any], dataset_box: list[Any]) -> None:
        import ray

        from personarag.pipeline import Pipeline

        kind, value = pipeline_spec
        self.dataset = ray.get(dataset_box[0])
        self.pipeline = Pipeline.from_config(value) if kind == "config" else value
        self.queries = {q.id: q for q in self.dataset.queries}
        self.dataset.prepare(self.pipeline)

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        import numpy as np

        ids = [str(i) for i in batch["id"]]
        records = self.dataset.run_batch(self.pipeline, [self.queries[i] for i in ids])
        lines = [json.dumps(record, ensure_ascii=False) for record in records]
        return {"id": np.array(ids, dtype=object), "records": np.array(lines, dtype=object)}


def pipeline_spec(pipeline: Any) -> tuple[str, Any]:
    """The pipeline's config when it has one (each actor builds its own copy from it); the
    pipeline object itself (pickled) when a stage was built from objects without a config."""
    try:
        return "config", pipeline.config()
    except TypeError:
        logger.warning("the pipeline has no config; sending the pipeline object itself to the Ray actors")
        return "object", pipeline


def run_batches(dataset: Any, pipeline: Any, queries: Sequence[Any], batch_size: int, *,
                address: str | None = None, options: Mapping[str, Any] | None = None) -> Iterator[list[tuple[dict, ...]]]:
    """The records of `queries` (one tuple per query, as `dataset.run_batch` returns them), in
    query order, a block at a time as the actors finish them."""
    options = check_options(options)
    if not queries:
        return
    with cluster(address, options.get("init")) as ray:
        context = ray.data.DataContext.get_current()
        before = context.execution_options.preserve_order, context.enable_progress_bars
        context.execution_options.preserve_order = True  # result files in query order, as a local run
        context.enable_progress_bars = bool(options.get("progress", False))
        try:
            with input_errors(ray):
                yield from _run(ray, dataset, pipeline, queries, batch_size, options)
        finally:  # the caller's own Ray Data settings are left as they were
            context.execution_options.preserve_order, context.enable_progress_bars = before


def _run(ray: Any, dataset: Any, pipeline: Any, queries: Sequence[Any], batch_size: int,
         options: Mapping[str, Any]) -> Iterator[list[tuple[dict, ...]]]:
    actors = options.get("actors") or max(1, sum(1 for node in ray.nodes() if node.get("Alive")))
    actors = min(actors, -(-len(queries) // batch_size))  # an actor without a batch would only cost its start
    spec = pipeline_spec(pipeline)
    items = ray.data.from_items([{"id": q.id} for q in queries])
    results = items.map_batches(
        PipelineActor,
        fn_constructor_args=(spec, [ray.put(dataset)]),
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=options.get("num_cpus", 1),
        num_gpus=options.get("num_gpus", 0),
    )
    logger.info("ray: %d queries over %d actors in batches of %d", len(queries), actors, batch_size)
    for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
        yield [tuple(json.loads(line)) for line in batch["records"]]
