"""The user store's tables of history-BM25 data, per tokenizer fingerprint (a `UserStore` mixin):

- `pr_token_terms`: an append-only vocabulary in chunks (term id = position). Writers are
  serialised, so a writer that finds terms appended since it last read numbers its own new
  terms after them and tells the caller how (`put_token_bags`).
- `pr_token_bags`: each text's bag of words over that vocabulary, keyed by the content hash
  of `pr_items` (only texts some stored item has are kept; a bag goes with the last item
  holding its content, like a cached embedding).
- `pr_bm25_postings`: a user's BM25 postings, keyed by fingerprint, parameters and user id,
  with the user's history version when written and a digest of the indexed history's texts.
  A row is served only while the user's version is unchanged (every change also deletes it)
  and its digest matches the history asked about.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from personarag.errors import InputError
from personarag.personal import store_schema as schema


def _terms_from(conn: Any, fingerprint: str, start: int) -> list[str]:
    rows = conn.execute(schema.sa().text(
        "SELECT first_id, terms FROM pr_token_terms WHERE fingerprint = :fingerprint AND first_id >= :start "
        "ORDER BY first_id"), {"fingerprint": fingerprint, "start": start})
    terms: list[str] = []
    for first_id, chunk in rows:
        if first_id != start + len(terms):
            raise InputError(f"stored vocabulary {fingerprint!r}: chunk at term {first_id}, expected "
                             f"{start + len(terms)}; the store's token tables are damaged")
        terms.extend(json.loads(chunk))
    return terms


class TokenTables:
    _t: dict[str, Any]
    _read: Callable[[], Any]
    _write: Callable[[], Any]
    _insert: Callable[[Any], Any]

    def token_terms(self, fingerprint: str, start: int = 0) -> list[str]:
        """The stored vocabulary of a tokenizer fingerprint, from term id `start` (a chunk start) on."""
        with self._read() as conn:
            return _terms_from(conn, fingerprint, start)

    def get_token_bags(self, fingerprint: str, content_hashes: Sequence[str]) -> dict[str, tuple[np.ndarray, int]]:
        """content hash -> (packed bag: int64 term << 32 | count, token count) of the stored ones."""
        table = self._t["token_bags"]
        s = schema.sa()
        wanted = list(dict.fromkeys(content_hashes))
        found: dict[str, tuple[np.ndarray, int]] = {}
        with self._read() as conn:
            for start in range(0, len(wanted), schema.CHUNK):
                rows = conn.execute(s.select(table.c.content_hash, table.c.bag, table.c.length).where(
                    table.c.fingerprint == fingerprint, table.c.content_hash.in_(wanted[start:start + schema.CHUNK])))
                found.update((key, (np.frombuffer(blob, dtype="<i8"), int(length))) for key, blob, length in rows)
        return found

    def put_token_bags(
        self, fingerprint: str, known: int, new_terms: Sequence[str], bags: Mapping[str, tuple[np.ndarray, int]]
    ) -> tuple[list[str], np.ndarray]:
        """Store bags written over the stored vocabulary's first `known` terms plus `new_terms`
        (ids known, known + 1, ...). Returns (the stored terms from `known` on, the stored id of
        each of `new_terms`): equal to (new_terms, known + arange) unless another process
        appended terms meanwhile. Bags of content no stored item has are not kept."""
        if not isinstance(fingerprint, str) or not fingerprint:
            raise InputError(f"put_token_bags: fingerprint must be a non-empty string, got {fingerprint!r}")
        s, t = schema.sa(), self._t
        terms_table, items = t["token_terms"], t["items"]
        held_query = s.select(items.c.content_hash).distinct().where(
            items.c.content_hash.in_(s.bindparam("hashes", expanding=True)))
        with self._write() as conn:
            tail = _terms_from(conn, fingerprint, known)
            if tail:  # another process appended terms: ours go after them, shared ones take its ids
                position = {term: known + i for i, term in enumerate(tail)}
                extra = [term for term in new_terms if term not in position]
                position.update((term, known + len(tail) + i) for i, term in enumerate(extra))
                new_ids = np.fromiter(map(position.__getitem__, new_terms), dtype=np.int64, count=len(new_terms))
                ids = np.concatenate([np.arange(known, dtype=np.int64), new_ids])
            else:
                extra, new_ids = list(new_terms), np.arange(known, known + len(new_terms), dtype=np.int64)
            if extra:
                conn.execute(s.insert(terms_table).values(
                    fingerprint=fingerprint, first_id=known + len(tail), terms=json.dumps(extra, ensure_ascii=False)))
            hashes = list(bags)
            held: set[str] = set()
            for start in range(0, len(hashes), schema.CHUNK):
                held.update(r[0] for r in conn.execute(held_query, {"hashes": hashes[start:start + schema.CHUNK]}))
            rows = []
            for key in hashes:
                if key in held:
                    packed, length = bags[key]
                    packed = np.asarray(packed, dtype=np.int64)
                    if tail:
                        packed = ids[packed >> 32] << 32 | (packed & 0xFFFFFFFF)
                    rows.append({"fingerprint": fingerprint, "content_hash": key, "length": int(length),
                                 "bag": packed.astype("<i8").tobytes()})
            for start in range(0, len(rows), schema.CHUNK):
                conn.execute(self._insert(t["token_bags"]).on_conflict_do_nothing(), rows[start:start + schema.CHUNK])
        return tail + extra, new_ids

    def get_bm25_postings(
        self, fingerprint: str, params: str, user_ids: Sequence[str], terms_from: int = 0
    ) -> tuple[list[str], dict[str, tuple[str, int, bytes, bytes]]]:
        """(the stored vocabulary from term id `terms_from` on, user id -> (history digest,
        vocabulary size when written, posting records, item lengths) of the rows written at the
        user's current history version), read in one snapshot. Plain SQL: a fresh process
        pays no statement compiling on this path."""
        s = schema.sa()
        query = s.text(
            "SELECT p.user_id, p.digest, p.terms, p.postings, p.lengths FROM pr_bm25_postings p "
            "JOIN pr_users u ON u.user_id = p.user_id WHERE p.fingerprint = :fingerprint "
            "AND p.params = :params AND p.history_version = u.history_version AND p.user_id IN :ids"
        ).bindparams(s.bindparam("ids", expanding=True))
        ids = list(dict.fromkeys(user_ids))
        found: dict[str, tuple[str, int, bytes, bytes]] = {}
        with self._read() as conn:
            terms = _terms_from(conn, fingerprint, terms_from)
            for start in range(0, len(ids), schema.CHUNK):
                rows = conn.execute(query, {"fingerprint": fingerprint, "params": params, "ids": ids[start:start + schema.CHUNK]})
                for user_id, digest, size, postings, lengths in rows.fetchall():  # one call, not one per row
                    found[user_id] = (digest, int(size), bytes(postings), bytes(lengths))
        return terms, found

    def put_bm25_postings(
        self, fingerprint: str, params: str, rows: Mapping[str, tuple[str, int, bytes, bytes]]
    ) -> int:
        """Store (replace) users' postings: user id -> (history digest, vocabulary size, records,
        item lengths), stamped with each user's current history version; users not in the store
        are skipped. Returns how many rows were written."""
        table, users = self._t["bm25_postings"], self._t["users"]
        s = schema.sa()
        ids = list(rows)
        with self._write() as conn:
            versions: dict[str, int] = {}
            for start in range(0, len(ids), schema.CHUNK):
                versions.update((u, int(v)) for u, v in conn.execute(s.select(users.c.user_id, users.c.history_version)
                                                                     .where(users.c.user_id.in_(ids[start:start + schema.CHUNK]))))
            values = [{"fingerprint": fingerprint, "params": params, "user_id": user_id, "history_version": version,
                       "digest": rows[user_id][0], "terms": rows[user_id][1], "postings": rows[user_id][2],
                       "lengths": rows[user_id][3]}
                      for user_id, version in versions.items()]
            stmt = self._insert(table)
            stmt = stmt.on_conflict_do_update(
                index_elements=["fingerprint", "params", "user_id"],
                set_={name: getattr(stmt.excluded, name) for name in ("history_version", "digest", "terms", "postings", "lengths")})
            for start in range(0, len(values), schema.CHUNK):
                conn.execute(stmt, values[start:start + schema.CHUNK])
        return len(values)

    def _drop_postings(self, conn: Any, user_id: str) -> None:
        table = self._t["bm25_postings"]
        conn.execute(schema.sa().delete(table).where(table.c.user_id == user_id))
