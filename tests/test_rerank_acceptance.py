"""Slow acceptance tests of the LLM rerankers on real SciFact (BEIR test split).

- With the qrels oracle (no errors) every method drives BM25 top-100 to the ideal order
  of the relevant documents among the candidates: nDCG@10 equals that of sorting the
  candidates by their judgements.
- With the real SmolLM2-135M-Instruct (transformers backend) each LLM reranker runs end
  to end on 3 queries over BM25 top-20, and a second identical run is served from the
  LLM cache with zero LLM calls.
"""

from __future__ import annotations

import pytest

from personarag import Ranking, registry
from personarag.evaluation.beir import load_beir
from personarag.evaluation.metrics import evaluate
from personarag.testing import OracleLLM
from personarag.retrievers.bm25 import BM25Retriever

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scifact(scifact_dir):
    data = load_beir(scifact_dir, "test")
    bm25 = BM25Retriever()
    bm25.index(data.corpus)
    return data, bm25, bm25.retrieve(data.queries, k=100)


def sorted_by_qrels(rankings: list[Ranking], qrels) -> list[Ranking]:
    return [Ranking(r.query, sorted(r.docs, key=lambda s: -qrels[r.query.id].get(s.doc.id, 0))) for r in rankings]


@pytest.mark.parametrize(
    "spec, params",
    [
        ("listwise", {"window": 20, "stride": 10}),
        ("setwise", {"c": 4, "top_k": 10}),
        ("groupwise", {"group_size": 10}),
        ("pointwise", {"mode": "yesno"}),
    ],
)
def test_perfect_oracle_reaches_the_ideal_ndcg_on_scifact(scifact, spec, params):
    data, _, candidates = scifact
    oracle = OracleLLM(data.corpus, data.queries, data.qrels)
    reranked = registry.build(spec, llm=oracle, **params).rerank(candidates)
    got = evaluate(reranked, data.qrels, ["nDCG@10"]).aggregate["nDCG@10"]
    ideal = evaluate(sorted_by_qrels(candidates, data.qrels), data.qrels, ["nDCG@10"]).aggregate["nDCG@10"]
    bm25 = evaluate(candidates, data.qrels, ["nDCG@10"]).aggregate["nDCG@10"]
    assert got == pytest.approx(ideal, abs=1e-9)
    assert ideal > bm25 + 0.2  # the oracle has real work to do: BM25 is 0.676, the ideal 0.914
    assert oracle.unknown_docs == 0
    assert all(not r.trace[-1].problems for r in reranked)


# --- the real small model ------------------------------------------------------------------
# Short budgets keep each test near a minute on CPU; an answer cut by max_new_tokens is
# repaired by the parsers (and recorded), which this also exercises on real outputs.
E2E = [
    ("pointwise", {"mode": "yesno"}),
    ("listwise", {"window": 20, "stride": 10, "max_new_tokens": 48}),
    ("setwise", {"c": 5, "top_k": 2}),
    ("groupwise", {"group_size": 10, "max_new_tokens": 48}),
]


@pytest.fixture(scope="module")
def smollm2(request, tmp_path_factory):
    """SmolLM2 loaded once for the module; each test points it at its own LLM cache."""
    pytest.importorskip("transformers")
    from personarag.llm.transformers_backend import TransformersLLM
    from tests.llm_models import cache_root, smollm2_gguf

    gguf_cache = str(cache_root(request, tmp_path_factory) / "gguf")
    return TransformersLLM(str(smollm2_gguf()), threads=1, cache_dir=None, gguf_cache_dir=gguf_cache)


@pytest.mark.parametrize("spec, params", E2E, ids=[s for s, _ in E2E])
def test_smollm2_reranks_scifact_end_to_end_and_replays_from_the_cache(scifact, smollm2, spec, params, tmp_path):
    data, _, candidates = scifact
    top20 = [r.top(20) for r in candidates[:3]]
    smollm2.cache_dir = str(tmp_path / "llm-cache")
    first = registry.build(spec, llm=smollm2, max_doc_tokens=32, **params).rerank(top20)
    for ranking, before in zip(first, top20):
        assert ranking.query.id == before.query.id
        assert sorted(ranking.ids) == sorted(before.ids)
        assert ranking.trace[-1].stage == spec
        assert ranking.trace[-1].usage.calls > 0 and ranking.trace[-1].usage.prompt_tokens > 0
    second = registry.build(spec, llm=smollm2, max_doc_tokens=32, **params).rerank(top20)
    assert [r.ids for r in second] == [r.ids for r in first]
    assert sum(r.trace[-1].usage.calls for r in second) == 0
    prompts = sum(r.trace[-1].usage.calls + r.trace[-1].usage.cached_calls for r in first)
    assert sum(r.trace[-1].usage.cached_calls for r in second) == prompts
