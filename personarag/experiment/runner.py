"""`Experiment`: evaluate one or several pipelines on one dataset, resumably.

    from personarag import Pipeline
    from personarag.evaluation.beir import load_beir
    from personarag.experiment import Experiment, RankingDataset

    data = RankingDataset.from_beir(load_beir("tests/fixtures/beir_mini"))
    result = Experiment([Pipeline(["bm25"], k=10), Pipeline(["bm25", "pointwise:openai:M"], k=10)],
                        data, ["nDCG@10", "MRR@10"], names=["bm25", "llm"], baseline="bm25",
                        output_dir="runs/mini").run()
    print(result.table)

Each finished query's result (ranking or prediction, with its trace and usage) is
appended to a JSONL file and fsynced as soon as its batch returns; LLM answers reach the
LLM cache as each returns. A rerun into the same folder redoes only unfinished queries.
The run's identity (its name, from a hash) covers the config and a content hash of the
data read; a rerun on changed data is refused, naming what changed, unless `overwrite`.
One run per folder at a time (a lock; a dead run's lock is taken over); the folder is
checked (not a file, writable, not full) before anything is loaded.

`engine="ray"` (with `ray_address`, `ray_options`) runs the unfinished queries on Ray actors
(`personarag.experiment.ray_engine`) and appends their records to the same files: the same
outputs as a local run, resumable by either engine.

With one system its files go straight into `output_dir`; with several, into
`output_dir/<name>/`, and `output_dir/comparison.json` holds the table against `baseline`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personarag.errors import InputError
from personarag.experiment import artifacts
from personarag.experiment.measures import Measure, as_measures, compare, format_table
from personarag.experiment.preflight import check_pipeline
from personarag.experiment.results_log import ResultLog, read_records
from personarag.types import Usage

logger = logging.getLogger(__name__)

STALE_ON_OVERWRITE = ("metrics.json", "per_query.json", "stats.json", "run.trec", "reasoning.jsonl", "comparison.json")


@dataclass(frozen=True)
class SystemResult:
    name: str
    run_name: str
    output_dir: Path
    metrics: dict[str, float]
    per_query: dict[str, dict[str, Any]]
    ran: int  # queries run by this call (the rest were already done)
    usage: Usage
    details: Any = None  # the EvalResult / LampScores behind the metrics


@dataclass(frozen=True)
class ExperimentResult:
    systems: dict[str, SystemResult]
    comparison: dict[str, Any]
    table: str
    baseline: str | None


class Experiment:
    """Evaluate `systems` (pipelines) on `dataset` (a RankingDataset or LampData) with `measures`."""

    def __init__(
        self,
        systems: Any,
        dataset: Any,
        measures: Sequence[str | Measure] | None = None,
        *,
        names: Sequence[str] | None = None,
        baseline: str | int | None = None,
        output_dir: str | Path,
        batch_size: int = 64,
        overwrite: bool = False,
        progress: bool | None = None,
        config: Mapping[str, Any] | None = None,
        prefix: str | None = None,
        engine: str = "local",
        ray_address: str | None = None,
        ray_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.systems = list(systems) if isinstance(systems, (list, tuple)) else [systems]
        if not self.systems:
            raise InputError("an Experiment needs at least one system (pipeline)")
        self.names = list(names) if names is not None else _default_names(self.systems)
        if len(self.names) != len(self.systems) or len(set(self.names)) != len(self.names):
            raise InputError(f"need one distinct name per system, got {self.names} for {len(self.systems)} systems")
        for name in self.names:
            if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
                raise InputError(f"system name {name!r}: use letters, digits and _.+- (it names a folder)")
        if isinstance(baseline, int) and not isinstance(baseline, bool):
            if not 0 <= baseline < len(self.names):
                raise InputError(f"baseline index {baseline} is out of range for {len(self.names)} systems")
            baseline = self.names[baseline]
        if baseline is not None and baseline not in self.names:
            raise InputError(f"baseline {baseline!r} is not one of the systems {self.names}")
        self.baseline = baseline
        self.dataset = dataset
        self.measures = as_measures(measures if measures is not None else dataset.default_measures)
        if dataset.kind == "ranking":
            from personarag.evaluation.metrics import parse_measure

            for measure in self.measures:
                parse_measure(measure.name)  # fail before any indexing
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        for pipeline in self.systems:
            check_pipeline(pipeline)
            dataset.check(pipeline)
        if engine not in ("local", "ray"):
            raise InputError(f"engine must be 'local' or 'ray', got {engine!r}")
        if engine == "ray":
            from personarag.errors import require
            from personarag.experiment.ray_engine import check_options

            ray_options = check_options(ray_options)
            require("ray", "ray", purpose="engine='ray'")  # before the output folder is touched
        self.engine, self.ray_address, self.ray_options = engine, ray_address, dict(ray_options or {})
        self.output_dir = Path(output_dir)
        self.batch_size, self.overwrite, self.progress = batch_size, overwrite, progress
        self.config = dict(config or {})
        self.prefix = prefix or f"{dataset.kind}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', dataset.name)}"

    def run(self) -> ExperimentResult:
        out = artifacts.check_output_dir(self.output_dir)
        with artifacts.FolderLock(out):
            results = {}
            for name, pipeline in zip(self.names, self.systems):
                folder = out if len(self.systems) == 1 else out / name
                results[name] = self._run_system(name, pipeline, folder)
            comparison = compare({n: r.metrics for n, r in results.items()},
                                 {n: r.per_query for n, r in results.items()}, self.measures, self.baseline)
            table = format_table(comparison, self.measures, self.baseline)
            if len(self.systems) > 1:
                artifacts.write_json(out / "comparison.json", {"baseline": self.baseline, "systems": comparison})
        return ExperimentResult(results, comparison, table, self.baseline)

    # ---- one system -----------------------------------------------------------------------
    def _identity(self, pipeline: Any) -> dict[str, Any]:
        identity = {**self.config, "pipeline": pipeline_config(pipeline)}
        identity.update(getattr(self.dataset, "identity", lambda p: {})(pipeline))
        identity["data"] = self.dataset.data
        return identity

    def _run_system(self, name: str, pipeline: Any, out: Path) -> SystemResult:
        dataset = self.dataset
        identity = self._identity(pipeline)
        named = {k: v for k, v in identity.items() if k not in artifacts.NOT_IDENTITY}
        named["data"] = {k: v for k, v in identity["data"].items() if k not in dataset.record_parts}
        if not named["data"]:
            del named["data"]  # names stay those of runs made before data hashes existed
        run_name = artifacts.run_name(self.prefix, named)
        config = {**identity, "run_name": run_name, "batch_size": self.batch_size, "versions": artifacts.library_versions()}
        if self.overwrite:
            for stale in (*dataset.result_files, *STALE_ON_OVERWRITE):
                (out / stale).unlink(missing_ok=True)
        artifacts.prepare_output_dir(out, run_name, self.overwrite, config=config)
        *firsts, last = dataset.result_files
        done = read_records(out / last)
        # drop results whose final record never landed
        kept = [read_records(out / other, keep=set(done)) for other in firsts]
        if dataset.record_parts:
            _check_inputs(out, kept[0] if kept else done, dataset)
        artifacts.write_json(out / "config.json", config)  # before any result: a rerun can tell whether it continues this run
        todo = [q for q in dataset.queries if q.id not in done]
        logger.info("%s / %s: %d queries, %d already done, %d to run", name, dataset.name, len(dataset.queries),
                    len(dataset.queries) - len(todo), len(todo))

        seconds: dict[str, float] = {}
        usage = Usage()
        started = time.perf_counter()
        if todo and self.engine == "local":
            dataset.prepare(pipeline)
        seconds["index"] = time.perf_counter() - started  # with Ray, each actor indexes: part of "run"
        logs = [ResultLog(out / f) for f in dataset.result_files]
        bar = _progress(len(todo), self.progress, f"{name} {dataset.name}" if len(self.systems) > 1 else dataset.name)
        try:
            for records in self._batches(dataset, pipeline, todo):
                for position, log in enumerate(logs):
                    log.append(r[position] for r in records)
                for r in records:
                    done[r[-1]["id"]] = r[-1]
                    usage = usage + Usage(**r[0].get("usage", {}))
                if bar is not None:
                    bar.update(len(records))
        finally:
            for log in logs:
                log.close()
            if bar is not None:
                bar.close()
        seconds["run"] = time.perf_counter() - started - seconds["index"]

        metrics, per_query, details = dataset.score(done, self.measures, run_name)
        dataset.write_outputs(out, done, run_name)
        if metrics:
            artifacts.write_json(out / "metrics.json", metrics)
        if per_query:
            artifacts.write_json(out / "per_query.json", per_query)
        stats = dataset.stats(details, len(todo), seconds, usage)
        if self.engine != "local":
            stats["engine"] = {"name": self.engine, "address": self.ray_address,
                               **{k: v for k, v in self.ray_options.items() if k != "init"}}
        artifacts.write_json(out / "stats.json", stats)
        return SystemResult(name, run_name, out, dict(metrics), dict(per_query), len(todo), usage, details)


    def _batches(self, dataset: Any, pipeline: Any, todo: list[Any]) -> Iterator[list[tuple[dict[str, Any], ...]]]:
        """The records of `todo`, a batch at a time: here, or from the Ray actors."""
        if self.engine == "ray":
            from personarag.experiment.ray_engine import run_batches

            yield from run_batches(dataset, pipeline, todo, self.batch_size, address=self.ray_address,
                                   options=self.ray_options)
            return
        for batch in artifacts.batched(todo, self.batch_size):
            yield dataset.run_batch(pipeline, batch)


def _check_inputs(out: Path, records: Mapping[str, Mapping[str, Any]], dataset: Any) -> None:
    """Refuse finished results whose input (question, gold) has changed since they ran."""
    changed: dict[str, list[str]] = {}
    for query_id, record in records.items():
        before, now = record.get("input"), dataset.inputs.get(query_id)
        if not isinstance(before, Mapping) or now is None:
            continue  # written before inputs were recorded, or not part of this run
        for part in dataset.record_parts:
            if part in before and before[part] != now.get(part):
                changed.setdefault(part, []).append(query_id)
    if changed:
        what = "; ".join(
            f"{part} ({dataset.data[part].get('source') or 'in memory'}) for {len(ids)} finished examples, e.g. {', '.join(ids[:3])}"
            for part, ids in changed.items()
        )
        raise InputError(
            f"{out}: the data changed since these results were computed: {what}; pass --overwrite "
            "(overwrite=True) to start again on the new data, or choose another output folder"
        )


def pipeline_config(pipeline: Any) -> dict[str, Any]:
    """The pipeline's config; a stage built from objects that have no config (a function as an
    LLM script) is described by its repr, which is not stable across processes, so such a run
    is not resumed (a rerun is "a different run" and needs overwrite)."""
    try:
        return pipeline.config()
    except TypeError as error:
        logger.warning("the pipeline cannot be saved as a config (%s); describing its stages by repr", error)
        stages = []
        for stage in pipeline.stages:
            try:
                stages.append(stage.config())
            except TypeError:
                stages.append({"spec": stage.spec_name, "repr": repr(stage)})
        return {"stages": stages, "k": pipeline.k, "context_k": pipeline.context_k}


def _default_names(systems: Sequence[Any]) -> list[str]:
    names: list[str] = []
    for pipeline in systems:
        base = "+".join(s.spec_name or type(s).__name__ for s in pipeline.stages) or "system"
        base = re.sub(r"[^A-Za-z0-9_.+-]+", "_", base)
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


def _progress(total: int, enabled: bool | None, desc: str) -> Any:
    if enabled is False or total == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="query", disable=None if enabled is None else not enabled)
