"""First-stage candidate lists with their texts: rank_llm / Ragnarok request files and TREC run + docs.

    from personarag.evaluation.candidates import read_candidates, read_trec_candidates

    first = read_candidates("BM25_dl19.json")             # JSON list or JSONL
    first = read_trec_candidates("run.trec", "docs.jsonl", "topics.tsv")

A request file holds one object per query:
- `query`: a string (the qid then comes from a `qid` field of the request or of its hits)
  or `{"qid": ..., "text": ...}` (Ragnarok);
- `hits` (rank_llm) or `candidates` (Ragnarok): each with `docid`, the text in `content`
  or in `doc: {"segment" | "contents" | "text", "title"}`, and optional `score`, `rank`.
qids and docids may be integers or strings; they become strings. Hits are ordered by
`rank` where every hit has one (file order breaks ties), else kept in file order; a hit
without a score gets minus its position, so the order is also the score order.

A TREC run is ordered by its rank column (as `Run.read_trec`); the texts come from a docs
file (JSONL with `docid`/`_id`/`id` and `contents`/`text`/`segment`/`content`, optional
`title`; or TSV `docid<TAB>text`, as MS MARCO's collection.tsv) read in one streaming pass
that keeps only the documents the run names, and the queries from a topics file (TSV
`qid<TAB>text`, or JSONL with `qid`/`_id`/`id` and `text`/`query`).

Every error names the file, the line (JSONL, TSV) or record (JSON list), and the field.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personarag.errors import InputError, decode_utf8, lone_surrogate
from personarag.evaluation.jsonl import field_str, iter_jsonl
from personarag.types import Document, Query, Ranking, ScoredDoc, StageTrace

logger = logging.getLogger(__name__)

TEXT_FIELDS = ("segment", "contents", "text", "content")  # inside a Ragnarok `doc`
DOC_ID_FIELDS = ("docid", "_id", "id", "doc_id")
DOC_TEXT_FIELDS = ("contents", "text", "segment", "content")
QUERY_ID_FIELDS = ("qid", "_id", "id", "query_id")
QUERY_TEXT_FIELDS = ("text", "query")


@dataclass(frozen=True)
class Candidates:
    """The first stage's ranking of each query, with document texts, in file order."""

    name: str
    rankings: tuple[Ranking, ...]
    source: str

    @property
    def queries(self) -> list[Query]:
        return [r.query for r in self.rankings]

    def __post_init__(self) -> None:
        object.__setattr__(self, "rankings", tuple(self.rankings))
        object.__setattr__(self, "_by_id", {r.query.id: r for r in self.rankings})

    def __getitem__(self, query_id: str) -> Ranking:
        return self._by_id[query_id]  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(self.rankings)

    @property
    def depth(self) -> int:
        """The longest candidate list."""
        return max((len(r.docs) for r in self.rankings), default=0)

    def coverage(self, judged: Iterable[str]) -> dict[str, int]:
        """How the candidate queries and the judged queries overlap (unjudged candidates are not scored;
        judged queries without candidates score 0)."""
        judged = set(judged)
        mine = {r.query.id for r in self.rankings}
        return {
            "queries": len(mine),
            "judged": len(mine & judged),
            "not_in_qrels": len(mine - judged),
            "judged_without_candidates": len(judged - mine),
        }


# ---- rank_llm / Ragnarok request files ------------------------------------------------------
def read_candidates(path: str | Path, *, name: str | None = None) -> Candidates:
    """A rank_llm / Ragnarok request file: a JSON list of requests, or one request per line (JSONL)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"candidate file {path} does not exist")
    rankings: list[Ranking] = []
    seen: dict[str, str] = {}
    for where, record in _requests(path):
        ranking = _request(record, where)
        qid = ranking.query.id
        if qid in seen:
            raise InputError(f"{where}: query {qid!r} appears a second time (first at {seen[qid]}); one request per query")
        seen[qid] = where
        rankings.append(ranking)
    if not rankings:
        raise InputError(f"{path}: no requests found; expected a JSON list or JSONL of {{query, hits|candidates}}")
    return Candidates(name or path.stem, tuple(rankings), str(path))


def iter_requests(path: str | Path) -> Iterator[tuple[str, Any]]:
    """(where, raw record) for each request of a rank_llm / Ragnarok file (JSON list or JSONL), so a
    caller can read fields of its own (e.g. `user_id`) beside `parse_request`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"request file {path} does not exist")
    yield from _requests(path)


def parse_request(record: Any, where: str = "request") -> Ranking:
    """One rank_llm / Ragnarok request as a Ranking of its candidates; errors name `where` and the field."""
    return _request(record, where)


def _requests(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, record) for each request; a JSON list is told from JSONL by its first character."""
    with path.open("rb") as handle:
        head = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"["):
        text = decode_utf8(path.read_bytes(), str(path)).removeprefix("\ufeff")
        try:
            records = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"{path}:{error.lineno}: not valid JSON ({error.msg} at column {error.colno})") from None
        for index, record in enumerate(records):
            yield f"{path}: record {index}", record
        return
    for line_number, record in iter_jsonl(path):
        yield f"{path}:{line_number}", record


def _request(record: Any, where: str) -> Ranking:
    if not isinstance(record, Mapping):
        raise InputError(f"{where}: expected an object with 'query' and 'hits' (or 'candidates'), got {type(record).__name__}")
    if "query" not in record:
        raise InputError(f"{where}: missing field 'query' (fields present: {sorted(record)})")
    hits_key = "hits" if "hits" in record else "candidates" if "candidates" in record else None
    if hits_key is None:
        raise InputError(f"{where}: missing field 'hits' (rank_llm) or 'candidates' (Ragnarok); fields present: {sorted(record)}")
    hits = record[hits_key]
    if not isinstance(hits, list):
        raise InputError(f"{where}: field {hits_key!r} must be a list, got {type(hits).__name__}")
    query = record["query"]
    if isinstance(query, Mapping):
        qid = _id(query, "qid", f"{where}, query")
        text = field_str(dict(query), "text", f"{where}, query")
    elif isinstance(query, str):
        text = query
        qid = _id(record, "qid", where) if "qid" in record else None
        if qid is None:
            hit_qids = {_id(h, "qid", f"{where}, {hits_key}[{i}]") for i, h in enumerate(hits)
                        if isinstance(h, Mapping) and "qid" in h}
            if len(hit_qids) != 1:
                raise InputError(
                    f"{where}: the query is a plain string and no qid was found: give 'qid' in the request, "
                    f"'query': {{'qid', 'text'}}, or a 'qid' on the hits (hits carry {sorted(hit_qids)})"
                )
            qid = hit_qids.pop()
    else:
        raise InputError(f"{where}: field 'query' must be a string or {{'qid', 'text'}}, got {type(query).__name__}")
    if not text.strip() or lone_surrogate(text):
        raise InputError(f"{where}: query {qid!r}: the query text is empty or not Unicode text: {text!r}")
    docs = _hits(hits, hits_key, qid, where)
    return Ranking(query=Query(id=qid, text=text), docs=docs, trace=(StageTrace(stage="candidates"),))


def _hits(hits: list[Any], key: str, qid: str, where: str) -> tuple[ScoredDoc, ...]:
    rows: list[tuple[int | None, int, Document, float | None]] = []
    seen: dict[str, int] = {}
    for index, hit in enumerate(hits):
        at = f"{where}, {key}[{index}]"
        if not isinstance(hit, Mapping):
            raise InputError(f"{at}: expected an object with 'docid' and a text, got {type(hit).__name__}")
        docid = _id(hit, "docid", at)
        if "qid" in hit and _id(hit, "qid", at) != qid:
            raise InputError(f"{at}: the hit's qid {hit['qid']!r} is not the request's qid {qid!r}")
        if docid in seen:
            raise InputError(f"{at}: document {docid!r} appears twice for query {qid!r} (first at {key}[{seen[docid]}])")
        seen[docid] = index
        text, title = _hit_text(hit, at)
        rank = _number(hit, "rank", at, integer=True)
        score = _number(hit, "score", at)
        rows.append((rank, index, Document(id=docid, text=text, title=title), score))
    if rows and all(rank is not None for rank, *_ in rows):
        rows.sort(key=lambda row: (row[0], row[1]))
    return tuple(ScoredDoc(doc, float(score) if score is not None else float(-position))
                 for position, (_, _, doc, score) in enumerate(rows))


def _hit_text(hit: Mapping[str, Any], at: str) -> tuple[str, str | None]:
    if "content" in hit:
        return _text(hit, "content", at), None
    doc = hit.get("doc")
    if isinstance(doc, Mapping):
        for field in TEXT_FIELDS:
            if field in doc:
                title = field_str(dict(doc), "title", f"{at}, doc", required=False)
                return _text(doc, field, f"{at}, doc"), title or None
        raise InputError(f"{at}, doc: no text field; expected one of {list(TEXT_FIELDS)} (fields present: {sorted(doc)})")
    raise InputError(f"{at}: no text; expected 'content' or 'doc': {{'segment' | 'contents', 'title'}} (fields present: {sorted(hit)})")


def _text(record: Mapping[str, Any], field: str, at: str) -> str:
    text = field_str(dict(record), field, at) or ""
    if not text.strip():
        raise InputError(f"{at}: field {field!r} is empty; every candidate needs its text")
    return text


def _id(record: Mapping[str, Any], field: str, at: str) -> str:
    value = field_str(dict(record), field, at) or ""
    if not value.strip():
        raise InputError(f"{at}: field {field!r} is empty")
    return value


def _number(record: Mapping[str, Any], field: str, at: str, *, integer: bool = False) -> Any:
    value = record.get(field)
    if value is None:
        return None
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok:
        raise InputError(f"{at}: field {field!r} must be {'an integer' if integer else 'a number'}, got {value!r}")
    return value


# ---- TREC run + docs + topics ---------------------------------------------------------------
def read_trec_candidates(run: str | Path, docs: str | Path, topics: str | Path, *, name: str | None = None) -> Candidates:
    """A TREC run file, the texts of the documents it ranks, and the queries' texts."""
    from personarag.evaluation.runs import Run

    ranked = Run.read_trec(run)
    queries = read_topics(topics)
    needed = {doc for q in ranked for doc, _ in ranked[q]}
    texts = read_docs(docs, needed)
    missing_docs = sorted(needed - set(texts))
    if missing_docs:
        raise InputError(f"{docs}: {len(missing_docs)} documents ranked in {run} are not in it, e.g. {missing_docs[:3]}")
    missing = [q for q in ranked if q not in queries]
    if missing:
        raise InputError(f"{topics}: {len(missing)} queries of {run} have no text there, e.g. {missing[:3]}")
    rankings = tuple(
        Ranking(query=Query(id=q, text=queries[q]), docs=tuple(ScoredDoc(texts[d], s) for d, s in ranked[q]),
                trace=(StageTrace(stage="candidates"),))
        for q in ranked
    )
    return Candidates(name or Path(run).stem, rankings, str(run))


def read_topics(path: str | Path) -> dict[str, str]:
    """qid -> text from TSV `qid<TAB>text` or JSONL (`qid`/`_id`/`id`, `text`/`query`)."""
    out: dict[str, str] = {}
    for where, record in _rows(Path(path), 2):
        qid = _first(record, QUERY_ID_FIELDS, where)
        text = _first(record, QUERY_TEXT_FIELDS, where)
        if not text.strip():
            raise InputError(f"{where}: query {qid!r} has an empty text")
        if qid in out:
            raise InputError(f"{where}: query {qid!r} appears twice")
        out[qid] = text
    return out


def read_docs(path: str | Path, keep: set[str] | None = None) -> dict[str, Document]:
    """docid -> Document from JSONL or TSV `docid<TAB>text`; with `keep`, only those documents."""
    out: dict[str, Document] = {}
    for where, record in _rows(Path(path), 2):
        docid = _first(record, DOC_ID_FIELDS, where)
        if keep is not None and docid not in keep:
            continue
        text = _first(record, DOC_TEXT_FIELDS, where)
        if not text.strip():
            raise InputError(f"{where}: document {docid!r} has an empty text")
        if docid in out:
            raise InputError(f"{where}: document {docid!r} appears twice")
        title = field_str(record, "title", where, required=False)
        out[docid] = Document(id=docid, text=text, title=title or None)
    return out


def _rows(path: Path, columns: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """JSONL records, or TSV lines as {"id": first column, "text": the rest}; told from the first character."""
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    with path.open("rb") as handle:
        head = handle.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"{"):
        for line_number, record in iter_jsonl(path):
            yield f"{path}:{line_number}", record
        return
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            line = decode_utf8(raw, str(path), line_number).rstrip("\r\n").removeprefix("\ufeff")
            if not line.strip():
                continue
            fields = line.split("\t", columns - 1)
            if len(fields) != columns:
                raise InputError(f"{path}:{line_number}: expected 'id<TAB>text', got {line[:80]!r}")
            yield f"{path}:{line_number}", {"id": fields[0].strip(), "text": fields[1]}


def _first(record: Mapping[str, Any], fields: tuple[str, ...], where: str) -> str:
    for field in fields:
        if field in record:
            return field_str(dict(record), field, where) or ""
    raise InputError(f"{where}: expected one of the fields {list(fields)} (fields present: {sorted(record)})")
