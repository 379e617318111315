"""BEIR datasets: `corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`, from a folder or by name.

By name, the official zip is downloaded once into a cache folder and extracted there
(`$PERSONARAG_CACHE/beir`, default `~/.cache/personarag/beir`).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from personarag.errors import InputError
from personarag.evaluation.jsonl import field_str, iter_jsonl
from personarag.evaluation.qrels import Qrels
from personarag.types import Corpus, Document, Query

logger = logging.getLogger(__name__)

BEIR_URL = "https://public.ukp.informatik.uni-darmstadt.de/thakur/BEIR/datasets/{name}.zip"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# The one BEIR dataset made of sub-datasets, each its own BEIR folder inside the zip.
_WITH_SUBSETS = ("cqadupstack",)


@dataclass(frozen=True)
class BeirDataset:
    name: str
    corpus: Corpus
    queries: list[Query]  # the queries judged in the split, in qrels order
    qrels: Qrels
    split: str = "test"
    path: Path | None = None


def default_cache_dir() -> Path:
    root = os.environ.get("PERSONARAG_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "personarag") / "beir"


def load_beir(
    path_or_name: str | Path,
    split: str = "test",
    *,
    cache_dir: str | Path | None = None,
    url: str = BEIR_URL,
) -> BeirDataset:
    """Load a BEIR folder, or a dataset by name (`scifact`, `cqadupstack/android`), downloading it once."""
    path = Path(path_or_name)
    if path.is_dir():
        return load_beir_dir(path, split)
    text = str(path_or_name)
    name, _, subset = text.partition("/")
    if path.exists() or not _NAME.match(name) or (subset and (name not in _WITH_SUBSETS or not _NAME.match(subset))):
        raise InputError(
            f"{path_or_name!r} is neither an existing dataset folder nor a BEIR dataset name "
            "like 'scifact' or 'cqadupstack/android'"
        )
    root = download_beir(name, cache_dir=cache_dir, url=url)
    folder = root / subset if subset else root
    if not folder.is_dir():
        raise InputError(f"BEIR dataset {name!r} has no sub-dataset {subset!r} in {root}")
    return load_beir_dir(folder, split, name=text)


DOWNLOAD_TIMEOUT = 60.0  # seconds without a byte from the server before a download fails


def download_beir(name: str, *, cache_dir: str | Path | None = None, url: str = BEIR_URL) -> Path:
    """The extracted folder of BEIR dataset `name`, downloading and unzipping it if not cached."""
    if not _NAME.match(name):
        raise InputError(f"not a BEIR dataset name: {name!r}")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / name
    if (target / "corpus.jsonl").is_file() or (target.is_dir() and (target / ".complete").is_file()):
        return target
    cache.mkdir(parents=True, exist_ok=True)
    source = url.format(name=name)
    logger.info("downloading BEIR %s from %s", name, source)
    with tempfile.TemporaryDirectory(dir=cache, prefix=f".{name}-") as tmp:
        archive = Path(tmp) / f"{name}.zip"
        try:
            with urllib.request.urlopen(source, timeout=DOWNLOAD_TIMEOUT) as response, archive.open("wb") as out:  # noqa: S310 (fixed scheme list below)
                shutil.copyfileobj(response, out, length=1 << 20)
        except OSError as error:  # URLError and HTTPError are OSErrors
            raise InputError(f"could not download BEIR dataset {name!r} from {source}: {error}") from error
        extract = Path(tmp) / "extract"
        try:
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    resolved = (extract / member).resolve()
                    if not resolved.is_relative_to(extract.resolve()):
                        raise InputError(f"{source}: unsafe path {member!r} in the archive")
                zf.extractall(extract)
        except zipfile.BadZipFile as error:
            raise InputError(f"{source} is not a valid zip archive: {error}") from error
        inner = extract / name if (extract / name).is_dir() else extract
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(inner), str(target))
        (target / ".complete").touch()
    return target


def load_beir_dir(path: str | Path, split: str = "test", *, name: str | None = None) -> BeirDataset:
    path = Path(path)
    for required in ("corpus.jsonl", "queries.jsonl"):
        if not (path / required).is_file():
            raise InputError(f"{path} is not a BEIR dataset folder: {required} is missing")
    qrels_path = path / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        available = sorted(p.stem for p in (path / "qrels").glob("*.tsv")) if (path / "qrels").is_dir() else []
        raise InputError(
            f"{path}: no qrels for split {split!r} ({qrels_path} is missing); splits available: "
            f"{', '.join(available) or 'none'}"
        )
    qrels = Qrels.read(qrels_path)
    corpus = read_corpus(path / "corpus.jsonl")
    queries = read_queries(path / "queries.jsonl", wanted=set(qrels.query_ids))

    unknown_queries = [q for q in qrels.query_ids if q not in queries]
    if unknown_queries:
        logger.warning(
            "%s: %d judged queries are not in queries.jsonl (e.g. %r); their judgements are kept and they score 0",
            qrels_path, len(unknown_queries), unknown_queries[0],
        )
    unknown_docs = sorted(d for d in qrels.doc_ids() if d not in corpus)
    if unknown_docs:
        logger.warning(
            "%s: %d judged documents are not in corpus.jsonl (e.g. %r); their judgements are kept",
            qrels_path, len(unknown_docs), unknown_docs[0],
        )
    return BeirDataset(
        name=name or path.name,
        corpus=corpus,
        queries=[queries[q] for q in qrels.query_ids if q in queries],
        qrels=qrels,
        split=split,
        path=path,
    )


def read_corpus(path: str | Path) -> Corpus:
    path = Path(path)
    docs: list[Document] = []
    seen: dict[str, int] = {}
    for line_number, record in iter_jsonl(path):
        where = f"{path}:{line_number}"
        doc_id = field_str(record, "_id", where)
        text = field_str(record, "text", where)
        title = field_str(record, "title", where, required=False) or None
        if not doc_id:
            raise InputError(f"{where}: empty '_id'")
        if doc_id in seen:
            raise InputError(f"{where}: duplicate document id {doc_id!r} (first on line {seen[doc_id]})")
        seen[doc_id] = line_number
        meta = record.get("metadata") or {}
        docs.append(Document(id=doc_id, text=text or "", title=title, meta=meta if isinstance(meta, dict) else {"metadata": meta}))
    return Corpus(docs, source=str(path))


def read_queries(path: str | Path, wanted: set[str] | None = None) -> dict[str, Query]:
    """Queries by id (all, or only `wanted`); every line is checked, only wanted ones are built."""
    path = Path(path)
    out: dict[str, Query] = {}
    for line_number, record in iter_jsonl(path):
        where = f"{path}:{line_number}"
        query_id = field_str(record, "_id", where)
        text = field_str(record, "text", where)
        if not query_id:
            raise InputError(f"{where}: empty '_id'")
        if wanted is not None and query_id not in wanted:
            continue
        if not text or not text.strip():
            raise InputError(f"{where}: query {query_id!r} has empty text")
        if query_id in out:
            raise InputError(f"{where}: duplicate query id {query_id!r}")
        meta = record.get("metadata") or {}
        out[query_id] = Query(id=query_id, text=text, meta=meta if isinstance(meta, dict) else {"metadata": meta})
    return out
