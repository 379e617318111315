"""Evaluation: qrels, runs (TREC files), IR metrics through ir_measures, dataset loaders."""

from personarag.evaluation.beir import BeirDataset, load_beir
from personarag.evaluation.metrics import EvalResult, evaluate
from personarag.evaluation.qrels import Qrels
from personarag.evaluation.runs import Run

__all__ = ["BeirDataset", "EvalResult", "Qrels", "Run", "evaluate", "load_beir"]
