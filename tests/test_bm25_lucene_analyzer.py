"""The Lucene-compatible options of the bm25s backend: splitter="lucene", stemmer="lucene_porter",
doc_lengths="lucene"; and the lucene backend's heap bound.

Expected tokens come from Lucene itself (Anserini 1.7.1's DefaultEnglishAnalyzer through pyserini
1.6.0, Lucene 9); the slow tests at the end compare against a live Lucene when one is installed.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from personarag import Document, InputError, Query
from personarag.retrievers import tokenization
from personarag.retrievers.bm25 import BM25Retriever
from personarag.retrievers.bm25_backends import lucene_doc_lengths

# text -> (StandardTokenizer + possessive filter + lowercase, the full English analyzer), from Lucene
LUCENE_ANALYSIS = {
    "John's dog and JAMES'S cat; the dogs' bowls, Mary’s hat": (
        ["john", "dog", "and", "james", "cat", "the", "dogs", "bowls", "mary", "hat"],
        ["john", "dog", "jame", "cat", "dog", "bowl", "mari", "hat"],
    ),
    "COVID-19 anti-inflammatory IL-6 TNF-α αβ-synuclein": (
        ["covid", "19", "anti", "inflammatory", "il", "6", "tnf", "α", "αβ", "synuclein"],
        ["covid", "19", "anti", "inflammatori", "il", "6", "tnf", "α", "αβ", "synuclein"],
    ),
    "3.14 1,000,000 10.5% p<0.05 2'-O-methyl 1990s v2.0.1 3rd": (
        ["3.14", "1,000,000", "10.5", "p", "0.05", "2", "o", "methyl", "1990s", "v2.0.1", "3rd"],
        ["3.14", "1,000,000", "10.5", "p", "0.05", "2", "o", "methyl", "1990", "v2.0.1", "3rd"],
    ),
    "see https://www.example.com/path?q=1&x=y or mail user@example.org": (
        ["see", "https", "www.example.com", "path", "q", "1", "x", "y", "or", "mail", "user", "example.org"],
        ["see", "http", "www.example.com", "path", "q", "1", "x", "y", "mail", "user", "example.org"],
    ),
    "naïve café Straße 北京大学 x² CO₂ ™® 😀 ﬁnance": (
        ["naïve", "café", "straße", "北", "京", "大", "学", "x", "co", "™", "®", "😀", "ﬁnance"],
        ["naïv", "café", "straße", "北", "京", "大", "学", "x", "co", "™", "®", "😀", "ﬁnanc"],
    ),
    "U.S.A. e.g. i.e. foo_bar don't rock'n'roll McDonald's O'Neil": (
        ["u.s.a", "e.g", "i.e", "foo_bar", "don't", "rock'n'roll", "mcdonald", "o'neil"],
        ["u.s.a", "e.g", "i.", "foo_bar", "don't", "rock'n'rol", "mcdonald", "o'neil"],
    ),
    "Ünïcödé ÉCOLE İstanbul ΣΟΦΙΑ": (
        ["ünïcödé", "école", "istanbul", "σοφια"],
        ["ünïcödé", "école", "istanbul", "σοφια"],
    ),
    "x's s's it's a b 7 I": (["x", "s", "it", "a", "b", "7", "i"], ["x", "s", "b", "7", "i"]),
}
# word -> Lucene's PorterStemFilter; snowball's "porter" (the 1980 paper) differs on the marked ones
LUCENE_STEMS = {
    "ms": "ms", "us": "us", "s": "s",  # snowball: m, u, ""
    "technology": "technolog", "apology": "apolog", "analogies": "analog", "ology": "ologi",  # -logi
    "possibly": "possibl", "irreversibly": "irrevers", "assembly": "assembl", "assemblies": "assembl",  # -bli
    "humbly": "humbl", "bubbly": "bubbl", "nobly": "nobli", "feebly": "feebli",
    "probably": "probabl", "ability": "abil", "sensibility": "sensibl", "generalization": "gener",
    "running": "run", "relational": "relat", "conditional": "condit", "hopefulness": "hope", "happy": "happi",
    "sky": "sky", "skies": "ski", "caresses": "caress", "ponies": "poni", "controll": "control", "agreed": "agre",
    "disabled": "disabl", "tables": "tabl", "mumbling": "mumbl",
}  # fmt: skip


def lucene_tokens(text: str, *, stopwords="en", stemmer="lucene_porter") -> list[str]:
    tokenizer = tokenization.make_tokenizer(lowercase=True, stopwords=stopwords, stemmer=stemmer, splitter="lucene")
    (ids,) = tokenization.tokenize_corpus(tokenizer, [text])
    return [t for t in tokenization.decode(tokenizer, [ids])[0] if t]


@pytest.mark.parametrize("text", list(LUCENE_ANALYSIS))
def test_lucene_splitter_and_analyzer_match_lucene(text):
    words, analyzed = LUCENE_ANALYSIS[text]
    assert tokenization.lucene_words_lower(text) == words
    assert lucene_tokens(text, stopwords=None, stemmer=None) == words
    assert lucene_tokens(text) == analyzed


def test_lucene_splitter_details():
    # no lowercasing here; the apostrophes of Lucene's possessive filter, before an ASCII s or S only
    assert tokenization.lucene_words("Mary’s ＭＡＲＹ＇S ＭＡＲＹ＇Ｓ dogs'") == ["Mary", "ＭＡＲＹ", "ＭＡＲＹ＇Ｓ", "dogs"]
    assert tokenization.lucene_words_lower("ΟΔΟΣ") == ["οδοσ"]  # Java's lowercase has no final sigma
    long = "x" * 600
    assert tokenization.lucene_words(long + " y") == ["x" * 255, "x" * 255, "x" * 90, "y"]  # Lucene's maxTokenLength
    assert tokenization.lucene_words(" -- ... ²³ ") == []
    # bm25s's default splitter drops one-character words and splits at dots and apostrophes
    assert lucene_tokens("U.S. vitamin D levels", stemmer=None) == ["u.s", "vitamin", "d", "levels"]
    bm25s_default = tokenization.make_tokenizer(lowercase=True, stopwords="en", stemmer=None)
    assert tokenization.decode(bm25s_default, tokenization.tokenize_corpus(bm25s_default, ["U.S. vitamin D levels"])) == [
        ["vitamin", "levels"]
    ]


def test_lucene_porter_matches_lucene():
    stemmer = tokenization.make_stemmer("lucene_porter")
    assert {word: stemmer.stemWord(word) for word in LUCENE_STEMS} == LUCENE_STEMS
    snowball = tokenization.make_stemmer("porter")
    assert [snowball.stemWord(w) for w in ("us", "technology", "possibly")] == ["u", "technologi", "possibli"]
    assert stemmer.stemWords(["skies", "ms"]) == ["ski", "ms"]


def test_lucene_porter_agrees_with_martin_porters_own_version():
    """NLTK's MARTIN_EXTENSIONS mode is Martin Porter's C version, which Lucene's PorterStemmer ports."""
    porter = pytest.importorskip("nltk.stem.porter")
    martin = porter.PorterStemmer(mode=porter.PorterStemmer.MARTIN_EXTENSIONS)
    stems = ["ab", "abl", "ass", "assem", "bub", "capa", "cred", "feeb", "hum", "irreversi", "nob", "poss", "respons",
             "tab", "geo", "bio", "ana", "apo", "o", "tech", "patho", "sy", "ky", "ce", "mult", "flexi", "sens", "trou"]  # fmt: skip
    suffixes = ["", "s", "y", "ly", "bly", "bli", "bles", "ably", "ibly", "ible", "able", "blies", "logy", "logies",
                "logist", "logical", "ness", "ation", "izing", "ful", "ally", "ed", "ing", "e", "le", "ll", "lle"]  # fmt: skip
    words = sorted({stem + suffix for stem in stems for suffix in suffixes} | set(LUCENE_STEMS))
    ours = tokenization.make_stemmer("lucene_porter")
    disagree = {w: (ours.stemWord(w), martin.stem(w)) for w in words if ours.stemWord(w) != martin.stem(w)}
    assert disagree == {}
    assert len(words) > 700


def _small_float_reference(length: int) -> int:
    """Lucene's SmallFloat.byte4ToInt(SmallFloat.intToByte4(length)), ported line by line."""

    def long_to_int4(i: int) -> int:
        bits = i.bit_length()
        if bits < 4:
            return i
        shift = bits - 4
        return ((i >> shift) & 0x07) | ((shift + 1) << 3)

    def int4_to_long(i: int) -> int:
        bits, shift = i & 0x07, (i >> 3) - 1
        return bits if shift == -1 else (bits | 0x08) << shift

    free = 255 - long_to_int4(2**31 - 1)
    encoded = length if length < free else free + long_to_int4(length - free)
    return encoded if encoded < free else free + int4_to_long(encoded - free)


def test_lucene_doc_lengths_equal_lucenes_one_byte_encoding():
    lengths = np.concatenate([np.arange(0, 5000), [10**5, 123457, 2**20 + 3, 2**31 - 1]])
    assert lucene_doc_lengths(lengths).tolist() == [_small_float_reference(int(n)) for n in lengths]
    assert lucene_doc_lengths(np.array([23, 24, 40, 41, 62, 300])).tolist() == [23, 24, 40, 40, 60, 280]


def test_doc_lengths_lucene_scores_by_hand():
    filler = [f"w{i}" for i in range(70)]
    docs = [
        Document("d1", " ".join(["apple"] + filler[:40])),  # 41 tokens, stored as 40
        Document("d2", " ".join(["apple", "apple"] + filler[:60])),  # 62, stored as 60
        Document("d3", " ".join(["cherry"] + filler[:9])),  # 10, exact
    ]
    k1, b = 0.9, 0.4
    options = {"k1": k1, "b": b, "stopwords": None, "stemmer": None}
    quantized = BM25Retriever(doc_lengths="lucene", **options)
    quantized.index(docs)
    exact = BM25Retriever(**options)
    exact.index(docs)
    average = (41 + 62 + 10) / 3
    idf = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))

    def score(tf: int, length: int) -> float:
        return idf * tf / (tf + k1 * (1 - b + b * length / average))

    got = {d.id: d.score for d in quantized.retrieve(Query("q", "apple"), k=2)[0].docs}
    assert got == pytest.approx({"d2": score(2, 60), "d1": score(1, 40)}, rel=1e-6)
    plain = {d.id: d.score for d in exact.retrieve(Query("q", "apple"), k=2)[0].docs}
    assert plain == pytest.approx({"d2": score(2, 62), "d1": score(1, 41)}, rel=1e-6)
    # short documents are stored exactly: the same score either way
    assert quantized.retrieve(Query("q", "cherry"), k=1)[0].docs[0].score == exact.retrieve(Query("q", "cherry"), k=1)[0].docs[0].score


def test_lucene_options_survive_save_and_load(tmp_path):
    docs = [Document("a", "The U.S. technology's assembly"), Document("b", "Irreversibly possible technologies")]
    retriever = BM25Retriever(splitter="lucene", stemmer="lucene_porter", doc_lengths="lucene")
    retriever.index(docs)
    queries = [Query("q1", "technologies"), Query("q2", "U.S. assemblies"), Query("q3", "irreversible")]
    before = retriever.retrieve(queries, k=2)
    loaded = BM25Retriever.load(retriever.save(tmp_path / "index"))
    assert loaded.params == retriever.params
    after = loaded.retrieve(queries, k=2)
    assert [[(d.id, d.score) for d in r.docs] for r in after] == [[(d.id, d.score) for d in r.docs] for r in before]
    assert before[1].ids[0] == "a" and before[1].trace[0].info["query_terms"] == 2  # "u.s" and "assembl" match
    assert before[2].ids[0] == "b"  # irreversible -> irrevers = irreversibly


def test_lucene_option_errors():
    with pytest.raises(InputError, match="splitter must be one of 'bm25s', 'lucene', got 'icu'"):
        BM25Retriever(splitter="icu")
    with pytest.raises(InputError, match="stemmer='lucene' is not a known stemmer.*'lucene_porter'"):
        BM25Retriever(stemmer="lucene")
    with pytest.raises(InputError, match="doc_lengths must be one of 'exact', 'lucene', got 'bytes'"):
        BM25Retriever(doc_lengths="bytes")
    with pytest.raises(InputError, match="doc_lengths='lucene' needs method in lucene, robertson, atire"):
        BM25Retriever(doc_lengths="lucene", method="bm25l")
    with pytest.raises(InputError, match="rank_bm25 uses exact document lengths"):
        BM25Retriever("rank_bm25", doc_lengths="lucene")
    rank_bm25 = BM25Retriever("rank_bm25", splitter="lucene", stemmer="lucene_porter")  # same tokens as bm25s
    rank_bm25.index([Document("a", "U.S. technology"), Document("b", "vitamin D")])
    assert rank_bm25.retrieve(Query("q", "technologies of the U.S."), k=1)[0].ids == ["a"]


# -- the lucene backend: heap bound; against a live Lucene -----------------------------------------


def test_heap_option_is_checked_and_becomes_xmx(tmp_path):
    from personarag.retrievers import lucene

    assert [lucene.check_heap(h) for h in ("512m", "2g", "4G", "1048576", None)] == ["512m", "2g", "4G", "1048576", None]
    for bad in ("2gb", "-1g", "0", 2, "", "1.5g"):
        with pytest.raises(InputError, match="heap must be None or a Java heap size"):
            lucene.check_heap(bad)
    assert [lucene.heap_mb(h) for h in ("512m", "2g", "1048576k", "1048576")] == [512, 2048, 1024, 1]
    home = tmp_path / "java"
    home.mkdir()
    (home / "release").write_text('JAVA_VERSION="25.0.2"\n')
    assert lucene.java_options(home, "768m") == ["-Xmx768m", "--sun-misc-unsafe-memory-access=allow"]
    assert lucene.java_options(home) == ["--sun-misc-unsafe-memory-access=allow"]
    assert lucene.DEFAULT_HEAP == "2g"


@pytest.fixture(scope="module")
def lucene_ready():
    pytest.importorskip("pyserini", reason="pyserini (extra 'lucene') is not installed")
    from personarag.retrievers import lucene

    try:
        lucene.java_home()
    except Exception as error:  # noqa: BLE001 - any Java problem means: cannot run Lucene here
        pytest.skip(f"no usable Java for Lucene: {error}")
    return lucene


def test_lucene_backend_takes_heap_and_lucene_options(lucene_ready):
    with pytest.raises(InputError, match="heap must be None or a Java heap size"):
        BM25Retriever("lucene", heap="lots")
    with pytest.raises(InputError, match="splitter must be None or 'lucene'"):
        BM25Retriever("lucene", splitter="bm25s")
    with pytest.raises(InputError, match="doc_lengths must be None or 'lucene'"):
        BM25Retriever("lucene", doc_lengths="exact")
    backend = BM25Retriever("lucene", stemmer="lucene_porter", splitter="lucene", heap="1g")._backend
    home = lucene_ready.java_home()
    command = backend.index_command(home, home / "in", home / "out")
    assert command[0] == str(home / "bin" / "java") and command[1] == "-Xmx1g"  # the indexing child's heap
    assert command[command.index("-memoryBuffer") + 1] == "512" and command[command.index("-stemmer") + 1] == "porter"
    unbounded = BM25Retriever("lucene", heap=None)._backend.index_command(home, home / "in", home / "out")
    assert not any(part.startswith("-Xmx") for part in unbounded) and "-memoryBuffer" not in unbounded


CHILD = """
import json, sys
from personarag import Document, Query
from personarag.retrievers.bm25 import BM25Retriever
retriever = BM25Retriever("lucene", heap=sys.argv[1])
retriever.index([Document("a", "apple pie"), Document("b", "cherry tart")])
assert retriever.retrieve(Query("q", "apple"), k=1)[0].ids == ["a"]
import jnius
print(json.dumps({"max_heap": jnius.autoclass("java.lang.Runtime").getRuntime().maxMemory()}))
"""


@pytest.mark.slow
def test_heap_reaches_the_jvm(lucene_ready, tmp_path):
    """In a fresh process (a JVM starts once per process): the running JVM's max heap is the option's."""
    done = subprocess.run([sys.executable, "-c", CHILD, "300m"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    max_heap = [line for line in done.stdout.splitlines() if line.startswith("{")][-1]
    assert 200 * 2**20 <= int(max_heap.split(":")[1].strip(" }")) <= 300 * 2**20


@pytest.mark.slow
def test_analyzer_agrees_with_live_lucene(lucene_ready):
    texts = list(LUCENE_ANALYSIS) + ["ΟΔΟΣ İİ", "Technologies' assemblies, irreversibly; ms us vs. 5'-UTR IFN-γ"]
    for text in texts:
        assert lucene_tokens(text) == lucene_ready.analyze(text), text
        assert lucene_tokens(text, stopwords=None, stemmer=None) == lucene_ready.analyze(text, stemmer=None, stopwords=None), text
