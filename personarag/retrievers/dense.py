"""Dense retrieval: a sentence-transformers bi-encoder over a FAISS index.

Documents are embedded once (title + text), normalised by default so the inner product is
cosine similarity, and searched with an exact (flat), IVF or HNSW index. With `cache_dir`,
embeddings (and IVF/HNSW indexes) are stored under a key of (model identity, corpus ids and
texts, encoding options) and reused, so an unchanged corpus is never re-encoded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from personarag.errors import InputError, require
from personarag.retrievers.base import Retriever
from personarag.types import Corpus, Document, Query, Ranking, ScoredDoc, StageTrace

if TYPE_CHECKING:
    import numpy as np

    from personarag.retrievers.encoders import SentenceEncoder
    from personarag.retrievers.faiss_index import VectorIndex

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
CACHE_FORMAT = 1
_SAVED = ("config.json", "embeddings.npy", "documents.jsonl", "index.faiss")


def corpus_hash(corpus: Corpus) -> str:
    """Hash of the ids and indexed texts, in order: any added, removed or edited document changes it."""
    digest = hashlib.sha256()
    for doc in corpus.values():
        digest.update(doc.id.encode())
        digest.update(b"\0")
        digest.update(doc.full_text.encode())
        digest.update(b"\1")
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    import importlib.metadata as metadata

    versions = {"python": platform.python_version()}
    for name in ("personarag", "sentence-transformers", "transformers", "torch", "faiss-cpu", "faiss-gpu", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


class DenseRetriever(Retriever):
    """Bi-encoder retrieval with any sentence-transformers model (local path or hub name).

    index: "flat" (exact inner product), "ivf" (nlist lists, nlist=None picks about 4*sqrt(n),
    at most n/39; nprobe lists searched) or "hnsw" (hnsw_m links per node, ef_search beam).
    IVF pays for speed in quality: on SciFact (5,183 docs, nlist 132) MiniLM's nDCG@10 is 0.645
    flat and HNSW, 0.594 / 0.624 / 0.633 / 0.643 IVF at nprobe 8 / 16 / 32 / 64; use it for
    corpora far beyond what a flat index scans quickly.
    query_prompt / document_prompt: prefixes such as "query: " / "passage: " for e5-style
    models; None uses the model's own "query" / "document" prompts when its config has them.
    threads: torch and FAISS CPU threads while indexing and searching (None leaves them).
    """

    spec_name: ClassVar[str] = "dense"

    def __init__(
        self,
        model: str | Path = DEFAULT_MODEL,
        *,
        index: str = "flat",
        device: str | None = None,
        batch_size: int = 32,
        normalize: bool = True,
        query_prompt: str | None = None,
        document_prompt: str | None = None,
        max_seq_length: int | None = None,
        nlist: int | None = None,
        nprobe: int = 8,
        hnsw_m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 64,
        cache_dir: str | Path | None = None,
        threads: int | None = None,
        show_progress: bool | None = None,
        seed: int = 0,
        revision: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        from personarag.retrievers.encoders import check_device
        from personarag.retrievers.faiss_index import IndexSpec

        if not isinstance(model, (str, Path)) or not str(model).strip():
            raise InputError(f"model must be a sentence-transformers path or hub name, got {model!r}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
            raise InputError(f"threads must be a positive integer or None, got {threads!r}")
        self.model = str(model)
        self.device = check_device(device)
        self.index_spec = IndexSpec(
            kind=index, metric="ip", nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m,
            ef_construction=ef_construction, ef_search=ef_search, seed=seed,
        )
        self.batch_size = batch_size
        self.normalize = bool(normalize)
        self.query_prompt = query_prompt
        self.document_prompt = document_prompt
        self.max_seq_length = max_seq_length
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.threads = threads
        self.show_progress = show_progress
        self.revision = revision
        self.trust_remote_code = trust_remote_code
        self._encoder: SentenceEncoder | None = None
        self._corpus: Corpus | None = None
        self._embeddings: np.ndarray | None = None
        self._vectors: VectorIndex | None = None
        self.cache_hit: bool | None = None  # whether the last index() reused cached embeddings

    # --- pieces ----------------------------------------------------------------------
    @property
    def encoder(self) -> SentenceEncoder:
        if self._encoder is None:
            from personarag.retrievers.encoders import load_sentence_encoder, set_threads

            set_threads(self.threads)
            self._encoder = load_sentence_encoder(
                self.model, self.device, max_seq_length=self.max_seq_length,
                revision=self.revision, trust_remote_code=self.trust_remote_code,
            )
        return self._encoder

    @property
    def embeddings(self) -> np.ndarray:
        """The (n_docs, dim) float32 document embeddings, rows in corpus order."""
        self._check_indexed()
        return self._embeddings

    @property
    def doc_ids(self) -> list[str]:
        self._check_indexed()
        return self._corpus.ids

    def _check_indexed(self) -> None:
        if self._corpus is None or self._vectors is None:
            raise InputError("the dense retriever has no index: call index(corpus) or DenseRetriever.load(dir) first")

    def _encoding_options(self) -> dict[str, Any]:
        return {
            "format": CACHE_FORMAT,
            "normalize": self.normalize,
            "document_prompt": self.document_prompt,
            "max_seq_length": self.max_seq_length,
            "text": "title\\ntext",
            "dtype": "float32",
        }

    # --- indexing --------------------------------------------------------------------
    def _index(self, corpus: Corpus) -> None:
        from personarag.retrievers.encoders import embedding_cache_key, set_threads

        set_threads(self.threads)
        cache = None
        if self.cache_dir is not None:
            key = embedding_cache_key(
                self.model, self.revision, corpus=corpus_hash(corpus), **self._encoding_options()
            )
            cache = self.cache_dir / key
        embeddings = self._read_cached_embeddings(cache, len(corpus)) if cache is not None else None
        self.cache_hit = embeddings is not None
        if embeddings is None:
            started = time.perf_counter()
            embeddings = self.encoder.encode(
                [doc.full_text for doc in corpus.values()],
                batch_size=self.batch_size, normalize=self.normalize, prompt=self.document_prompt,
                task="document", show_progress=self.show_progress,
            )
            logger.info("encoded %d documents with %s in %.1f s", len(corpus), self.model, time.perf_counter() - started)
            if cache is not None:
                self._write_cached_embeddings(cache, embeddings, corpus)
        self._corpus = corpus
        self._embeddings = embeddings
        self._vectors = self._build_vectors(embeddings, cache)

    def _read_cached_embeddings(self, cache: Path, n_docs: int) -> np.ndarray | None:
        np = require("numpy", "dense")
        path = cache / "embeddings.npy"
        if not path.is_file():
            return None
        embeddings = np.load(path)
        if embeddings.ndim != 2 or embeddings.shape[0] != n_docs or embeddings.dtype != np.float32:
            logger.warning("ignoring cached embeddings at %s: shape %s does not fit %d documents", path, embeddings.shape, n_docs)
            return None
        logger.info("reusing cached embeddings from %s", path)
        return embeddings

    def _write_cached_embeddings(self, cache: Path, embeddings: np.ndarray, corpus: Corpus) -> None:
        np = require("numpy", "dense")
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / "embeddings.npy.tmp"
        with tmp.open("wb") as handle:
            np.save(handle, embeddings)
        tmp.replace(cache / "embeddings.npy")
        meta = {
            "model": self.model, "revision": self.revision, "n_docs": len(corpus), "dim": int(embeddings.shape[1]),
            "encoding": self._encoding_options(), "versions": library_versions(),
        }
        (cache / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    def _build_vectors(self, embeddings: np.ndarray, cache: Path | None) -> VectorIndex:
        from personarag.retrievers.faiss_index import VectorIndex

        spec = self.index_spec
        if spec.kind == "flat" or cache is None:  # a flat index is rebuilt from embeddings in no time
            return VectorIndex(spec).build(embeddings)
        build_fields = {k: v for k, v in spec.to_dict().items() if k not in ("nprobe", "ef_search")}
        name = hashlib.sha256(json.dumps(build_fields, sort_keys=True).encode()).hexdigest()[:16]
        path = cache / f"index-{spec.kind}-{name}.faiss"
        if path.is_file():
            return VectorIndex.load(path, nprobe=spec.nprobe, ef_search=spec.ef_search)
        vectors = VectorIndex(spec).build(embeddings)
        vectors.save(path)
        return vectors

    # --- retrieval -------------------------------------------------------------------
    def encode_queries(self, queries: list[Query]) -> np.ndarray:
        return self.encoder.encode(
            [q.text for q in queries], batch_size=self.batch_size, normalize=self.normalize,
            prompt=self.query_prompt, task="query", show_progress=self.show_progress,
        )

    def _retrieve(self, queries: list[Query], k: int) -> list[Ranking]:
        from personarag.retrievers.encoders import set_threads

        self._check_indexed()
        set_threads(self.threads)
        scores, positions = self._vectors.search(self.encode_queries(queries), k)
        docs = self._corpus.documents()
        info = {"model": self.model, "index": self.index_spec.kind}
        out = []
        for query, row_scores, row_positions in zip(queries, scores, positions):
            scored = [ScoredDoc(docs[p], float(s)) for s, p in zip(row_scores, row_positions) if p >= 0]
            out.append(Ranking(query, scored, (StageTrace("dense", info=info),)))
        return out

    # --- save / load -----------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write config.json (params, library versions), embeddings.npy, documents.jsonl and index.faiss."""
        np = require("numpy", "dense")
        self._check_indexed()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {
            **self.config(), "versions": library_versions(), "n_docs": len(self._corpus),
            "dim": int(self._embeddings.shape[1]), "corpus_hash": corpus_hash(self._corpus),
        }
        (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        with (directory / "embeddings.npy").open("wb") as handle:
            np.save(handle, self._embeddings)
        with (directory / "documents.jsonl").open("w", encoding="utf-8") as handle:
            for doc in self._corpus.values():
                record = {"id": doc.id, "title": doc.title, "text": doc.text, "meta": dict(doc.meta)}
                handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        self._vectors.save(directory / "index.faiss")
        return directory

    @classmethod
    def load(cls, directory: str | Path, **overrides: Any) -> DenseRetriever:
        """Rebuild a saved retriever; `overrides` replace saved params (device, nprobe, ef_search, threads...).

        Build-time index params (index, nlist, hnsw_m, ef_construction) cannot be overridden:
        the saved index was built with them.
        """
        from personarag.retrievers.faiss_index import VectorIndex

        np = require("numpy", "dense")
        directory = Path(directory)
        missing = [name for name in _SAVED if not (directory / name).is_file()]
        if missing:
            raise InputError(f"{directory} is not a saved dense retriever: missing {', '.join(missing)}")
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        if config.get("spec") != cls.spec_name:
            raise InputError(f"{directory}/config.json: spec is {config.get('spec')!r}, expected {cls.spec_name!r}")
        fixed = {"index", "nlist", "hnsw_m", "ef_construction", "normalize", "document_prompt", "max_seq_length"}
        clash = sorted(fixed & set(overrides))
        if clash:
            raise InputError(f"cannot override {', '.join(clash)} when loading: the saved index was built with them")
        now = library_versions()
        for name, version in config.get("versions", {}).items():
            if name in now and now[name] != version:
                logger.warning("%s was saved with %s %s; this is %s", directory, name, version, now[name])
        retriever = cls(**{**config["params"], **overrides})
        documents = []
        with (directory / "documents.jsonl").open(encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                documents.append(Document(record["id"], record["text"], record.get("title"), record.get("meta") or {}))
        corpus = Corpus(documents, source=str(directory / "documents.jsonl"))
        embeddings = np.load(directory / "embeddings.npy")
        if embeddings.shape != (len(corpus), config["dim"]):
            raise InputError(
                f"{directory}: embeddings.npy has shape {embeddings.shape}, expected ({len(corpus)}, {config['dim']})"
            )
        spec = retriever.index_spec
        retriever._vectors = VectorIndex.load(directory / "index.faiss", nprobe=spec.nprobe, ef_search=spec.ef_search)
        retriever._corpus = corpus
        retriever._embeddings = embeddings
        return retriever
