"""Running pipelines over datasets: batching, progress, per-query persistence, resume, locks, artifacts;
comparison suites over the same first-stage candidates (tables with significance tests, plots).

Imports nothing heavy; `Experiment` and the dataset adapters load on first use.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "Experiment": "personarag.experiment.runner",
    "ExperimentResult": "personarag.experiment.runner",
    "SystemResult": "personarag.experiment.runner",
    "RankingDataset": "personarag.experiment.datasets",
    "LampData": "personarag.experiment.datasets",
    "Measure": "personarag.experiment.measures",
    "CandidateDataset": "personarag.experiment.candidates",
    "OracleReranker": "personarag.experiment.oracle",
    "Suite": "personarag.experiment.suite",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'personarag.experiment' has no attribute {name!r}")


__all__ = sorted(_LAZY)
