"""BM25Retriever: scoring checked by hand, bm25s against rank_bm25, options, persistence, errors.

The Lucene tests start a JVM (~20-30 s), so they are marked slow and skip without pyserini/Java.
"""

from __future__ import annotations

import gc
import json
import math
import sys

import numpy as np
import pytest

from personarag import Corpus, Document, InputError, Query, UnknownSpecError, registry
from personarag.errors import MissingExtraError
from personarag.retrievers import tokenization
from personarag.retrievers.bm25 import BM25Retriever

# Short abstracts; no stemmed term occurs in more than half of them (checked in a test),
# so rank_bm25's negative-idf floor never applies and its scores are comparable exactly.
ABSTRACTS = [
    ("a1", "Vitamin D deficiency", "Low vitamin D levels are linked to bone fractures in older adults."),
    ("a2", "Statins and the heart", "Statin therapy lowers cholesterol and reduces heart attacks."),
    ("a3", "Sleep and memory", "Deep sleep consolidates memory; sleeping poorly harms recall."),
    ("a4", "Exercise", "Regular exercise improves heart health and lowers blood pressure."),
    ("a5", "Gut bacteria", "Gut microbiota influence immune responses and inflammation."),
    ("a6", "Coffee", "Drinking coffee is associated with lower risk of liver disease."),
    ("a7", "Antibiotics", "Antibiotic overuse drives resistance in hospital bacteria."),
    ("a8", "Vaccines", "Measles vaccination prevents outbreaks; vaccines are safe."),
    ("a9", None, "Smoking causes lung cancer and damages blood vessels."),
    ("a10", "Fractures", "Calcium and vitamin supplements may prevent hip fractures."),
]
QUERIES = [
    Query("q1", "vitamin D and fractures"),
    Query("q2", "heart attack risk from cholesterol"),
    Query("q3", "bacteria resisting antibiotics"),
    Query("q4", "does sleeping help memories"),
    Query("q5", "blood pressure exercise"),
    Query("q6", "zebra quantum"),  # no known term
]


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus(Document(i, text, title=title, meta={"n": n}) for n, (i, title, text) in enumerate(ABSTRACTS))


def _scores(ranking) -> dict[str, float]:
    return {d.id: d.score for d in ranking.docs}


def test_hand_checked_ranking():
    """Lucene-variant BM25 computed by hand for one query term over three documents."""
    docs = [Document("d1", "apple banana"), Document("d2", "apple apple cherry"), Document("d3", "banana cherry cherry durian")]
    k1, b = 0.9, 0.4
    retriever = BM25Retriever(k1=k1, b=b, stopwords=None, stemmer=None)
    retriever.index(docs)
    ranking = retriever.retrieve(Query("q", "apple"), k=3)[0]
    idf = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))  # N=3 documents, 2 contain "apple"
    avgdl = (2 + 3 + 4) / 3

    def term(tf: int, dl: int) -> float:
        return idf * tf / (tf + k1 * (1 - b + b * dl / avgdl))

    assert ranking.ids == ["d2", "d1", "d3"]
    assert [d.score for d in ranking.docs] == pytest.approx([term(2, 3), term(1, 2), 0.0], abs=1e-6)
    assert ranking.trace[0].stage == "bm25"
    assert ranking.trace[0].info["matched"] == 2


def test_bm25s_matches_rank_bm25(corpus):
    """bm25s with ATIRE tf and Robertson idf is BM25Okapi's formula; same tokens give the same scores."""
    tokenizer = tokenization.make_tokenizer(lowercase=True, stopwords="en", stemmer="english")
    tokens = tokenization.decode(tokenizer, tokenization.tokenize_corpus(tokenizer, [d.full_text for d in corpus.values()]))
    df: dict[str, int] = {}
    for doc in tokens:
        for token in set(doc):
            df[token] = df.get(token, 0) + 1
    assert max(df.values()) <= len(corpus) / 2  # precondition: no negative idf, so no epsilon floor

    fast = BM25Retriever("bm25s", method="atire", idf_method="robertson", k1=1.2, b=0.75)
    reference = BM25Retriever("rank_bm25", k1=1.2, b=0.75)
    fast.index(corpus)
    reference.index(corpus)
    for mine, theirs in zip(fast.retrieve(QUERIES, k=len(corpus)), reference.retrieve(QUERIES, k=len(corpus))):
        a, b = _scores(mine), _scores(theirs)
        assert a.keys() == b.keys()
        for doc_id in a:
            assert a[doc_id] == pytest.approx(b[doc_id], abs=1e-4), (mine.query.id, doc_id)
        assert mine.ids[:3] == theirs.ids[:3], mine.query.id
        assert mine.trace[0].info["query_terms"] == theirs.trace[0].info["query_terms"]
    # sanity: the queries do match something, and q6 nothing
    assert fast.retrieve(QUERIES[2], k=1)[0].ids == ["a7"]
    assert fast.retrieve(QUERIES[5], k=3)[0].trace[0].info["matched"] == 0


def test_default_variant_differs_from_okapi_but_agrees_on_order(corpus):
    lucene_variant = BM25Retriever()
    reference = BM25Retriever("rank_bm25")
    lucene_variant.index(corpus)
    reference.index(corpus)
    mine = lucene_variant.retrieve(QUERIES[2], k=3)[0]
    theirs = reference.retrieve(QUERIES[2], k=3)[0]
    assert mine.ids[0] == theirs.ids[0] == "a7"
    assert mine.docs[0].score != pytest.approx(theirs.docs[0].score, abs=1e-3)


def test_tokenization_options_change_tokens():
    text = ["The runners were running to the fractured bones"]

    def tokens(**options):
        tokenizer = tokenization.make_tokenizer(**options)
        return tokenization.decode(tokenizer, tokenization.tokenize_corpus(tokenizer, text))[0]

    assert tokens(lowercase=True, stopwords=None, stemmer=None) == ["the", "runners", "were", "running", "to", "the", "fractured", "bones"]
    # bm25s's "en" list is Lucene's 33 English stopwords: "were" is not one of them
    assert tokens(lowercase=True, stopwords="en", stemmer=None) == ["runners", "were", "running", "fractured", "bones"]
    assert tokens(lowercase=True, stopwords="en", stemmer="english") == ["runner", "were", "run", "fractur", "bone"]
    assert tokens(lowercase=False, stopwords="en", stemmer=None)[0] == "The"  # "the" is a stopword, "The" is not


def test_options_change_retrieval():
    docs = [Document("d1", "the cat sat"), Document("d2", "cats are here"), Document("d3", "a dog")]
    stemmed, plain, with_stopwords = BM25Retriever(), BM25Retriever(stemmer=None), BM25Retriever(stopwords=None)
    for retriever in (stemmed, plain, with_stopwords):
        retriever.index(docs)
    assert stemmed.retrieve(Query("q", "cat"), k=3)[0].trace[0].info["matched"] == 2
    assert plain.retrieve(Query("q", "cat"), k=3)[0].trace[0].info["matched"] == 1
    assert stemmed.retrieve(Query("q", "the"), k=3)[0].trace[0].info["matched"] == 0
    assert with_stopwords.retrieve(Query("q", "the"), k=3)[0].ids[0] == "d1"


@pytest.mark.parametrize("backend", ["bm25s", "rank_bm25"])
@pytest.mark.parametrize("mmap", [False, True])
def test_save_load_round_trip(corpus, tmp_path, backend, mmap):
    retriever = BM25Retriever(backend, k1=1.1, stemmer="porter")
    retriever.index(corpus)
    before = retriever.retrieve(QUERIES, k=5)
    retriever.save(tmp_path / "index")
    saved = json.loads((tmp_path / "index" / "config.json").read_text())
    assert saved["retriever"] == {"spec": "bm25", "params": {"backend": backend, "k1": 1.1, "stemmer": "porter"}}
    assert saved["num_docs"] == len(corpus)
    assert "bm25s" in saved["versions"] and "numpy" in saved["versions"]

    loaded = BM25Retriever.load(tmp_path / "index", mmap=mmap)
    assert loaded.config() == retriever.config()
    after = loaded.retrieve(QUERIES, k=5)
    for a, b in zip(before, after):
        assert a.ids == b.ids
        assert [d.score for d in a.docs] == pytest.approx([d.score for d in b.docs], abs=1e-7)
    first = after[2].docs[0].doc
    assert (first.id, first.title, first.text, first.meta) == ("a7", "Antibiotics", ABSTRACTS[6][2], {"n": 6})
    untitled = loaded.retrieve(Query("q", "smoking lung"), k=1)[0].docs[0].doc
    assert (untitled.id, untitled.title) == ("a9", None)
    if mmap and backend == "bm25s":
        assert isinstance(loaded._backend.model.scores["data"], np.memmap)


def test_load_refuses_a_folder_without_config(tmp_path):
    with pytest.raises(InputError, match="config.json"):
        BM25Retriever.load(tmp_path)


@pytest.mark.parametrize("backend", ["bm25s", "rank_bm25"])
def test_k_above_corpus_size_returns_every_document(backend):
    texts = ["red apple", "green pear", "red cherry", "blue sky", "white snow"]
    docs = [Document(f"d{i}", text) for i, text in enumerate(texts, 1)]
    retriever = BM25Retriever(backend)
    retriever.index(docs)
    ranking = retriever.retrieve(Query("q", "red fruit"), k=50)[0]
    assert sorted(ranking.ids) == ["d1", "d2", "d3", "d4", "d5"]
    assert ranking.ids[2:] == ["d2", "d4", "d5"]  # non-matching documents last, in corpus order
    assert [d.score for d in ranking.docs[2:]] == [0.0, 0.0, 0.0]
    assert all(d.score > 0 for d in ranking.docs[:2])


@pytest.mark.parametrize("backend", ["bm25s", "rank_bm25"])
def test_blank_documents_are_indexed_and_never_match(backend):
    docs = [Document("d1", "cat"), Document("d2", " "), Document("d3", "dog"), Document("d4", "", title="")]
    retriever = BM25Retriever(backend)
    retriever.index(docs)
    assert retriever.retrieve(Query("q", "cat"), k=10)[0].ids == ["d1", "d2", "d3", "d4"]
    assert retriever.retrieve(Query("q", "the"), k=10)[0].trace[0].info["matched"] == 0


def test_batch_equals_one_by_one(corpus):
    retriever = BM25Retriever(n_threads=2)
    retriever.index(corpus)
    batch = retriever.retrieve(QUERIES, k=4)
    assert gc.isenabled()  # paused while building results, then restored
    for query, ranking in zip(QUERIES, batch):
        single = retriever.retrieve(query, k=4)[0]
        assert ranking.query == query
        assert single.ids == ranking.ids
        assert [d.score for d in single.docs] == [d.score for d in ranking.docs]


def test_unknown_backend_lists_valid_ones():
    with pytest.raises(UnknownSpecError) as info:
        BM25Retriever("elastic")
    for name in ("auto", "bm25s", "rank_bm25", "lucene"):
        assert name in str(info.value)
    assert BM25Retriever("auto").backend == "bm25s"


def test_missing_library_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "rank_bm25", None)
    with pytest.raises(MissingExtraError, match=r"personarag\[bm25\]"):
        BM25Retriever("rank_bm25")
    monkeypatch.setitem(sys.modules, "pyserini", None)
    with pytest.raises(MissingExtraError, match=r"personarag\[lucene\]"):
        BM25Retriever("lucene")


def test_bad_options_are_refused():
    with pytest.raises(InputError, match="PyStemmer algorithm"):
        BM25Retriever(stemmer="klingon")
    with pytest.raises(InputError, match="stopwords"):
        BM25Retriever(stopwords="xx")
    with pytest.raises(InputError, match="method"):
        BM25Retriever(method="bm26")
    with pytest.raises(InputError, match="bm25s's BM25 variant"):
        BM25Retriever("rank_bm25", method="robertson")
    with pytest.raises(InputError, match="always lowercases"):
        BM25Retriever("lucene", lowercase=False)
    with pytest.raises(InputError, match="b must be"):
        BM25Retriever(b=1.5)
    with pytest.raises(InputError, match="index_dir"):
        BM25Retriever("bm25s", index_dir="/tmp/x")


def test_corpus_errors_and_unindexed_use(corpus):
    retriever = BM25Retriever()
    with pytest.raises(InputError, match="no index"):
        retriever.retrieve(QUERIES[0])
    with pytest.raises(InputError, match="empty"):
        retriever.index([])
    with pytest.raises(InputError, match="duplicate document id 'a1'"):
        retriever.index([Document("a1", "x"), Document("a1", "y")])
    with pytest.raises(InputError, match="nothing to save"):
        retriever.save("unused")


def test_config_round_trips_through_registry(corpus):
    built = registry.build("bm25:rank_bm25", k1=1.2)
    assert isinstance(built, BM25Retriever) and built.backend == "rank_bm25"
    config = built.config()
    assert config == {"spec": "bm25", "params": {"backend": "rank_bm25", "k1": 1.2}}
    again = registry.build_from_config(json.loads(json.dumps(config)))
    assert again.config() == config
    built.index(corpus)
    again.index(corpus)
    assert built.retrieve(QUERIES[1], k=3)[0].ids == again.retrieve(QUERIES[1], k=3)[0].ids
    assert registry.build("bm25").config() == {"spec": "bm25", "params": {}}


# -- Lucene (slow: starts a JVM) ------------------------------------------------------------


@pytest.fixture(scope="module")
def lucene_ready():
    pytest.importorskip("pyserini", reason="pyserini (extra 'lucene') is not installed")
    from personarag.retrievers import lucene

    try:
        lucene.java_home()
    except Exception as error:  # noqa: BLE001 - any Java problem means: cannot test here
        pytest.skip(f"no usable Java for Lucene: {error}")
    return lucene


@pytest.mark.slow
def test_lucene_scores_equal_bm25s_lucene_variant(lucene_ready, tmp_path):
    """Without stemming and stopwords both tokenize plain words alike; short documents keep Lucene's
    lossy length encoding exact, so the two implementations of Lucene's BM25 agree (Lucene rounds to 4 digits)."""
    docs = [
        Document("d1", "apple banana"),
        Document("d2", "apple apple cherry"),
        Document("d3", "banana cherry cherry durian"),
        Document("d4", "elder fig grape"),
    ]
    queries = [Query("q1", "apple cherry"), Query("q2", "durian banana"), Query("q3", "zebra")]
    lucene = BM25Retriever("lucene", stopwords=None, stemmer=None, index_dir=str(tmp_path / "lucene"))
    fast = BM25Retriever("bm25s", stopwords=None, stemmer=None)
    lucene.index(docs)
    fast.index(docs)
    for a, b in zip(lucene.retrieve(queries, k=10), fast.retrieve(queries, k=10)):
        assert a.ids == b.ids
        assert [d.score for d in a.docs] == pytest.approx([d.score for d in b.docs], abs=2e-4)
    assert lucene.retrieve(queries[2], k=10)[0].trace[0].info["matched"] == 0

    lucene.save(tmp_path / "saved")
    loaded = BM25Retriever.load(tmp_path / "saved")
    assert loaded.retrieve(queries, k=2)[0].ids == lucene.retrieve(queries, k=2)[0].ids
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["versions"]["anserini"]


@pytest.mark.slow
def test_lucene_analyzer_options(lucene_ready, corpus):
    text = "The runners were running to the fractured bones"
    assert lucene_ready.analyze(text) == ["runner", "were", "run", "fractur", "bone"]
    assert lucene_ready.analyze(text, stemmer=None, stopwords=None)[:2] == ["the", "runners"]
    assert lucene_ready.analyze(text, stemmer="krovetz")[:3] == ["runner", "were", "running"]
    default = BM25Retriever("lucene")
    default.index(corpus)
    assert default.retrieve(QUERIES[2], k=1)[0].ids == ["a7"]
    assert default.retrieve(Query("q", "the"), k=3)[0].trace[0].info["matched"] == 0  # a stopword


@pytest.mark.slow
def test_lucene_blank_documents_come_back_unmatched(lucene_ready):
    retriever = BM25Retriever("lucene")
    retriever.index([Document("d1", "cat"), Document("d2", " "), Document("d3", "dog"), Document("d4", "")])
    ranking = retriever.retrieve(Query("q", "cat"), k=10)[0]
    assert ranking.ids == ["d1", "d2", "d3", "d4"]  # Anserini skips blank documents; we still return them
    assert [d.score > 0 for d in ranking.docs] == [True, False, False, False]
