"""Real-data quality of dense and hybrid retrieval on BEIR SciFact test (slow; skipped without ../shared).

The SciFact corpus (5,183 abstracts) is encoded once per run: the dense retriever is shared
across tests and caches its embeddings under .cache/ (git-ignored), so a rerun only loads them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from personarag.retrievers.base import Retriever
from personarag.retrievers.fusion import FusionRetriever, WeightedFusionRetriever

pytestmark = pytest.mark.slow
logger = logging.getLogger(__name__)
K = 100
CACHE = Path(__file__).resolve().parents[1] / ".cache" / "personarag-tests"


@pytest.fixture(scope="module")
def scifact(scifact_dir):
    from personarag.evaluation.beir import load_beir

    return load_beir(scifact_dir, split="test")


@pytest.fixture(scope="module")
def dense(scifact, minilm_path):
    from personarag.retrievers.dense import DenseRetriever

    retriever = DenseRetriever(minilm_path, device="cpu", batch_size=32, threads=2, cache_dir=CACHE / "dense")
    retriever.index(scifact.corpus)
    return retriever


@pytest.fixture(scope="module")
def bm25(scifact):
    from personarag.retrievers.bm25 import BM25Retriever

    retriever = BM25Retriever()
    retriever.index(scifact.corpus)
    return retriever


def ndcg10(retriever: Retriever, scifact) -> float:
    from personarag.evaluation.metrics import evaluate

    result = evaluate(retriever.retrieve(scifact.queries, k=K), scifact.qrels, measures=("nDCG@10",))
    assert result.num_queries == 300 and not result.missing_queries
    return result.aggregate["nDCG@10"]


@pytest.fixture(scope="module")
def scores(scifact, dense, bm25):
    return {"dense": ndcg10(dense, scifact), "bm25": ndcg10(bm25, scifact)}


def test_dense_minilm_scifact_ndcg(scores):
    logger.info("SciFact test nDCG@10 dense all-MiniLM-L6-v2: %.4f", scores["dense"])
    assert scores["dense"] >= 0.62  # published all-MiniLM-L6-v2 on SciFact: ~0.645


def test_rrf_beats_both_parts(scifact, dense, bm25, scores):
    fused = ndcg10(FusionRetriever([bm25, dense]), scifact)  # parts are indexed already
    logger.info("SciFact test nDCG@10 rrf(bm25, dense): %.4f (bm25 %.4f, dense %.4f)", fused, scores["bm25"], scores["dense"])
    assert fused > max(scores["bm25"], scores["dense"]) + 0.005


def test_weighted_sum_beats_both_parts(scifact, dense, bm25, scores):
    fused = ndcg10(WeightedFusionRetriever([bm25, dense]), scifact)
    logger.info("SciFact test nDCG@10 wsum(bm25, dense): %.4f", fused)
    assert fused > max(scores["bm25"], scores["dense"])
