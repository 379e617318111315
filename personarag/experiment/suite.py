"""A comparison suite: several systems over the same first-stage candidates, one table and one plot.

    from personarag.experiment.suite import Suite

    suite = Suite.from_file("eval/compare_dl19_smoke.yaml")
    report = suite.run()          # resumable: each system in output_dir/<name>/
    print(report.markdown)        # also output_dir/compare.md, compare.json, compare.png

The config (YAML or JSON; relative paths are relative to the folder the command runs in):

    name: dl19-smoke
    dataset:
      candidates: ../shared/data/trec-dl/dl19/BM25_dl19.json   # or run + docs + topics
      qrels: ../shared/data/trec-dl/dl19/qrels.dl19-passage.txt
      relevance_level: 2            # Recall/MAP/MRR count grade >= 2 (TREC DL)
      max_queries: 43
      # or a BEIR split, whose first stage is run once and shared by every system:
      # beir: scifact | beir_dir: DIR, split: test, first_stage: bm25, k: 100
    measures: [nDCG@10, MRR@10, Recall@20]
    k: 100                # candidates per query (default: all)
    rerank_depth: 20      # for every system unless it sets its own
    baseline: bm25
    tests: [t, randomisation]   # the first marks the table; both are in compare.json
    correction: holm            # or none
    cost: tokens                # the plot's x axis: tokens | seconds
    systems:
      - name: bm25                                  # no rerankers: the first stage itself
      - {name: oracle, oracle: true}                # candidates sorted by their grades
      - name: pointwise
        rerankers: ["pointwise:transformers:PATH"]  # spec strings or {spec, params} configs
        rerank_depth: 10
      - {name: saved, pipeline: my_pipeline.yaml}   # a saved pipeline config (rerankers only)
    published:
      - {name: RankZephyr-7B, nDCG@10: 0.7365, source: rank_llm 2CR}
    output_dir: eval/results/dl19_smoke
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personarag.errors import InputError
from personarag.experiment import artifacts

logger = logging.getLogger(__name__)

KEYS = ("name", "dataset", "measures", "k", "rerank_depth", "baseline", "tests", "correction", "cost", "systems",
        "published", "output_dir", "batch_size")
DATASET_KEYS = ("candidates", "run", "docs", "topics", "qrels", "relevance_level", "max_queries",
                "beir", "beir_dir", "split", "first_stage", "cache_dir")
SYSTEM_KEYS = ("name", "rerankers", "pipeline", "oracle", "rerank_depth")


@dataclass(frozen=True)
class SuiteReport:
    table: dict[str, Any]
    markdown: str
    files: tuple[Path, ...]


class Suite:
    def __init__(self, config: Mapping[str, Any], *, source: str = "config") -> None:
        unknown = sorted(set(config) - set(KEYS))
        if unknown:
            raise InputError(f"{source}: unknown keys {unknown}; allowed: {list(KEYS)}")
        self.source = source
        self.config = dict(config)
        self.name = str(config.get("name") or Path(source).stem)
        dataset = config.get("dataset")
        if not isinstance(dataset, Mapping):
            raise InputError(f"{source}: 'dataset' must be a mapping with candidates + qrels, or beir/beir_dir")
        unknown = sorted(set(dataset) - set(DATASET_KEYS))
        if unknown:
            raise InputError(f"{source}: unknown keys under 'dataset': {unknown}; allowed: {list(DATASET_KEYS)}")
        self.dataset = dict(dataset)
        systems = config.get("systems")
        if not isinstance(systems, list) or not systems:
            raise InputError(f"{source}: 'systems' must be a non-empty list of {{name, rerankers | pipeline | oracle}}")
        for position, system in enumerate(systems):
            if not isinstance(system, Mapping) or not isinstance(system.get("name"), str):
                raise InputError(f"{source}: systems[{position}] needs a 'name', got {system!r}")
            bad = sorted(set(system) - set(SYSTEM_KEYS))
            if bad:
                raise InputError(f"{source}: systems[{position}] ({system['name']}): unknown keys {bad}; allowed: {list(SYSTEM_KEYS)}")
            if sum(key in system for key in ("rerankers", "pipeline", "oracle")) > 1:
                raise InputError(f"{source}: systems[{position}] ({system['name']}): give one of rerankers, pipeline, oracle")
        self.systems = [dict(s) for s in systems]
        names = [s["name"] for s in self.systems]
        if len(set(names)) != len(names):
            raise InputError(f"{source}: system names must be distinct, got {names}")
        self.baseline = config.get("baseline", names[0])
        if self.baseline is not None and self.baseline not in names:
            raise InputError(f"{source}: baseline {self.baseline!r} is not one of the systems {names}")
        published = config.get("published") or []
        if not isinstance(published, list):
            raise InputError(f"{source}: 'published' must be a list of {{name, <measure>: value, source}}")
        self.published = published
        from personarag.experiment.report import TESTS

        tests = config.get("tests") or ["t"]
        tests = [tests] if isinstance(tests, str) else list(tests)
        if not tests or any(t not in TESTS for t in tests):
            raise InputError(f"{source}: unknown significance tests in {tests}; choose from {sorted(TESTS)}")
        self.tests = tests
        if config.get("correction", "holm") not in (None, "holm", "none"):
            raise InputError(f"{source}: correction must be holm or none, got {config['correction']!r}")
        self.correction = None if config.get("correction", "holm") in (None, "none") else "holm"
        if config.get("cost", "tokens") not in ("tokens", "seconds"):
            raise InputError(f"{source}: cost (the plot's x axis) must be tokens or seconds, got {config['cost']!r}")
        if not config.get("output_dir"):
            raise InputError(f"{source}: give output_dir (or --output-dir)")
        self.output_dir = Path(str(config["output_dir"])).expanduser()

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> Suite:
        from personarag.pipeline import load_config

        config = load_config(path)
        config.update({k: v for k, v in overrides.items() if v is not None})
        return cls(config, source=str(path))

    # ---- building ---------------------------------------------------------------------------
    def load_dataset(self) -> Any:
        from personarag.evaluation.candidates import read_candidates, read_trec_candidates
        from personarag.evaluation.qrels import Qrels
        from personarag.experiment.candidates import CandidateDataset

        d = self.dataset
        level, max_queries = d.get("relevance_level"), d.get("max_queries")
        if d.get("beir") or d.get("beir_dir"):
            return self._beir_dataset(level, max_queries)
        if not d.get("qrels"):
            raise InputError(f"{self.source}: dataset needs qrels (a TREC or BEIR qrels file)")
        if d.get("candidates"):
            candidates = read_candidates(_path(d["candidates"]))
        elif d.get("run"):
            if not (d.get("docs") and d.get("topics")):
                raise InputError(f"{self.source}: dataset.run needs docs and topics files")
            candidates = read_trec_candidates(_path(d["run"]), _path(d["docs"]), _path(d["topics"]))
        else:
            raise InputError(f"{self.source}: dataset needs candidates, run (+docs, topics), beir or beir_dir")
        qrels = Qrels.read(_path(d["qrels"]))
        return CandidateDataset(candidates, qrels, max_queries=max_queries, relevance_level=level)

    def _beir_dataset(self, level: Any, max_queries: Any) -> Any:
        """A BEIR split whose first stage runs once here and is shared by every system."""
        from personarag.evaluation.beir import load_beir
        from personarag.evaluation.candidates import Candidates
        from personarag.experiment.candidates import CandidateDataset
        from personarag.pipeline import Pipeline

        d = self.dataset
        source = _path(d["beir_dir"]) if d.get("beir_dir") else d["beir"]
        beir = load_beir(source, d.get("split") or "test", cache_dir=d.get("cache_dir"))
        queries = beir.queries[:max_queries] if max_queries else beir.queries
        first = d.get("first_stage") or "bm25"
        pipeline = Pipeline([first], k=int(self.config.get("k") or 100)).index(beir.corpus)
        rankings = pipeline.retrieve(queries)
        candidates = Candidates(f"{beir.name}-{_safe(str(first))}", tuple(rankings), f"{source} + {first}")
        return CandidateDataset(candidates, beir.qrels, max_queries=max_queries, relevance_level=level)

    def build_systems(self, dataset: Any) -> tuple[list[Any], list[str]]:
        from personarag.experiment.oracle import OracleReranker
        from personarag.pipeline import Pipeline, load_config

        k = self.config.get("k") or max(dataset.candidates.depth, 1)
        pipelines, names = [], []
        for system in self.systems:
            depth = system.get("rerank_depth", self.config.get("rerank_depth"))
            if system.get("oracle"):
                qrels = self.dataset.get("qrels")
                if not qrels:
                    raise InputError(f"{self.source}: system {system['name']!r}: the oracle needs dataset.qrels (a file)")
                stages: list[Any] = [OracleReranker(str(_path(qrels)))]
            elif system.get("pipeline"):
                saved = load_config(_path(system["pipeline"]))
                stages = list(saved.get("stages") or [])
                depth = system.get("rerank_depth", saved.get("rerank_depth", depth))
            else:
                rerankers = system.get("rerankers") or []
                stages = [rerankers] if isinstance(rerankers, (str, Mapping)) else list(rerankers)
            pipelines.append(Pipeline(stages, k=k, rerank_depth=depth))
            names.append(system["name"])
        return pipelines, names

    def _published(self) -> list[dict[str, Any]]:
        """Published rows with their measure names at the dataset's relevance level, as the run rows'."""
        from personarag.experiment.candidates import at_relevance_level

        level = self.dataset.get("relevance_level")
        rows = []
        for entry in self.published:
            if not isinstance(entry, Mapping):
                raise InputError(f"{self.source}: a published row must be a mapping, got {entry!r}")
            rows.append({(k if k in _NOT_MEASURES else at_relevance_level(str(k), level)): v for k, v in entry.items()})
        return rows

    # ---- running ----------------------------------------------------------------------------
    def run(self, *, overwrite: bool = False, progress: bool | None = None) -> SuiteReport:
        from personarag.experiment.candidates import measures_at_level
        from personarag.experiment.measures import as_measures
        from personarag.experiment.report import comparison_table, plot_quality_cost, to_markdown
        from personarag.experiment.results_log import read_records
        from personarag.experiment.runner import Experiment

        out = artifacts.check_output_dir(self.output_dir)
        data = self.load_dataset()
        pipelines, names = self.build_systems(data)
        baseline = self.baseline
        measures = self.config.get("measures") or list(data.default_measures)
        measures = as_measures(measures_at_level([str(m) for m in measures], self.dataset.get("relevance_level")))
        identity = {"command": "compare", "dataset": {k: self.dataset.get(k) for k in ("relevance_level",)}}
        experiment = Experiment(pipelines, data, measures, names=names, baseline=baseline, output_dir=out,
                                batch_size=int(self.config.get("batch_size") or 8), overwrite=overwrite,
                                progress=progress, config=identity, prefix=f"compare-{_safe(data.name)}")
        result = experiment.run()
        folders = {n: r.output_dir for n, r in result.systems.items()}
        records = {n: read_records(folders[n] / data.result_files[-1]) for n in names}
        table = comparison_table(
            names, {n: r.metrics for n, r in result.systems.items()}, {n: r.per_query for n, r in result.systems.items()},
            records, measures, baseline=baseline, tests=self.tests, correction=self.correction, published=self._published(),
            query_ids=[q.id for q in data.queries],
        )
        table["suite"] = self.name
        table["dataset"] = {**data.data, "name": data.name, "candidates": data.coverage,
                            "relevance_level": self.dataset.get("relevance_level")}
        table["rerank_depth"] = {n: p.rerank_depth for n, p in zip(names, pipelines)}
        title = f"{self.name}: {data.name}, {len(data.queries)} queries"
        markdown = to_markdown(table, title)
        artifacts.write_text(out / "compare.md", markdown)
        artifacts.write_json(out / "compare.json", table)
        png = plot_quality_cost(table, out / "compare.png", cost=self.config.get("cost") or "tokens", title=title)
        return SuiteReport(table, markdown, (out / "compare.md", out / "compare.json", png))


_NOT_MEASURES = frozenset({"name", "source", "calls", "prompt_tokens", "completion_tokens", "seconds"})


def _path(value: Any) -> Path:
    return Path(str(value)).expanduser().resolve()


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)
