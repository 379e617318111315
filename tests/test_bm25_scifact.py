"""BM25 quality on BEIR SciFact test (300 queries, 5,183 abstracts); slow, skipped without ../shared.

Published nDCG@10: bm25s (k1=0.9, b=0.4, Lucene variant) 0.676; Pyserini BM25 flat 0.6789 (which bm25s
reaches with Lucene's analysis and document lengths).
"""

from __future__ import annotations

import pytest

from personarag.retrievers.bm25 import BM25Retriever

pytestmark = pytest.mark.slow
K = 100


@pytest.fixture(scope="module")
def scifact(scifact_dir):
    from personarag.evaluation.beir import load_beir

    return load_beir(scifact_dir, split="test")


def ndcg10(retriever: BM25Retriever, scifact) -> float:
    from personarag.evaluation.metrics import evaluate

    retriever.index(scifact.corpus)
    rankings = retriever.retrieve(scifact.queries, k=K)
    assert len(rankings) == len(scifact.queries) == 300
    assert all(len(r.docs) == K for r in rankings)
    return evaluate(rankings, scifact.qrels, measures=("nDCG@10",)).aggregate["nDCG@10"]


@pytest.fixture(scope="module")
def bm25s_ndcg(scifact) -> float:
    return ndcg10(BM25Retriever("bm25s"), scifact)


def test_bm25s_reaches_published_quality(bm25s_ndcg):
    assert bm25s_ndcg >= 0.665, bm25s_ndcg
    assert bm25s_ndcg == pytest.approx(0.676, abs=0.005), bm25s_ndcg


def test_rank_bm25_close_to_bm25s(scifact, bm25s_ndcg):
    reference = ndcg10(BM25Retriever("rank_bm25"), scifact)
    assert reference == pytest.approx(bm25s_ndcg, abs=0.005), (reference, bm25s_ndcg)
    # bm25s scoring BM25Okapi's formula (ATIRE tf, Robertson idf) ranks like rank_bm25 itself
    okapi = ndcg10(BM25Retriever("bm25s", method="atire", idf_method="robertson"), scifact)
    assert okapi == pytest.approx(reference, abs=1e-3), (okapi, reference)


def test_lucene_reproduces_pyserini(scifact, tmp_path):
    pytest.importorskip("pyserini", reason="pyserini (extra 'lucene') is not installed")
    from personarag.retrievers import lucene

    try:
        lucene.java_home()
    except Exception as error:  # noqa: BLE001 - any Java problem means: cannot run Lucene here
        pytest.skip(f"no usable Java for Lucene: {error}")
    value = ndcg10(BM25Retriever("lucene", n_threads=2, index_dir=str(tmp_path / "lucene")), scifact)
    assert value == pytest.approx(0.6789, abs=0.005), value


def test_bm25s_with_lucene_analysis_reproduces_pyserini(scifact):
    """Lucene's tokens (StandardTokenizer, possessives, 33 stopwords, Lucene's Porter) and its one-byte
    document lengths: bm25s then ranks as Lucene does, Pyserini's flat BM25 0.6789 to four digits."""
    retriever = BM25Retriever(splitter="lucene", stemmer="lucene_porter", doc_lengths="lucene")
    assert ndcg10(retriever, scifact) == pytest.approx(0.6789, abs=5e-5)
    # the tokens alone (exact lengths) get most of the way: 0.6777
    assert ndcg10(BM25Retriever(splitter="lucene", stemmer="lucene_porter"), scifact) == pytest.approx(0.6777, abs=5e-4)


def test_lucene_splitter_and_stemmer_agree_with_lucene_on_every_document(scifact):
    """Token streams of all 5,183 abstracts (title + text) and 300 test queries: identical to Lucene's."""
    pytest.importorskip("pyserini", reason="pyserini (extra 'lucene') is not installed")
    from personarag.retrievers import lucene, tokenization

    try:
        lucene.java_home()
    except Exception as error:  # noqa: BLE001 - any Java problem means: cannot run Lucene here
        pytest.skip(f"no usable Java for Lucene: {error}")
    texts = [doc.full_text for doc in scifact.corpus.documents()] + [query.text for query in scifact.queries]
    tokenizer = tokenization.make_tokenizer(lowercase=True, stopwords="en", stemmer="lucene_porter", splitter="lucene")
    ours = [[t for t in tokens if t] for tokens in tokenization.decode(tokenizer, tokenization.tokenize_corpus(tokenizer, texts))]
    differ = [(text[:80], mine) for text, mine in zip(texts, ours) if mine != lucene.analyze(text)]
    assert differ == [] and sum(map(len, ours)) > 838_000
