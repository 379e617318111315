"""The user store's cached vectors (a `UserStore` mixin): item embeddings keyed by (encoder
fingerprint, content hash), and user vectors keyed by (kind, user id) with the history version
they were computed from, so a stale one is never served (`fresh=True`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from personarag.errors import InputError
from personarag.personal import store_schema as schema
from personarag.personal.store_io import vector_blob


@dataclass(frozen=True)
class UserVector:
    vector: np.ndarray  # float32, e.g. a running (weighted) sum, not normalised
    count: int  # items summed
    history_version: int  # the user's history version it was computed from


class VectorTables:
    """Needs the host's `_t` (tables), `_read`, `_write`, `_insert` and `url`."""

    def get_embeddings(self, fingerprint: str, content_hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """content hash -> float32 vector, for the hashes cached under this encoder fingerprint."""
        table = self._t["embeddings"]
        s = schema.sa()
        wanted = list(dict.fromkeys(content_hashes))
        found: dict[str, np.ndarray] = {}
        with self._read() as conn:
            for start in range(0, len(wanted), schema.CHUNK):
                rows = conn.execute(s.select(table.c.content_hash, table.c.vector).where(
                    table.c.fingerprint == fingerprint, table.c.content_hash.in_(wanted[start:start + schema.CHUNK])))
                for key, blob in rows:
                    found[key] = np.frombuffer(blob, dtype="<f4").astype(np.float32)
        return found

    def put_embeddings(self, fingerprint: str, vectors: Mapping[str, np.ndarray]) -> None:
        """Cache vectors (stored as float32) under (fingerprint, content hash); existing keys are kept."""
        if not isinstance(fingerprint, str) or not fingerprint:
            raise InputError(f"put_embeddings: fingerprint must be a non-empty string, got {fingerprint!r}")
        rows = [{"fingerprint": fingerprint, "content_hash": key, **vector_blob(vector, f"embedding {key!r}")}
                for key, vector in vectors.items()]
        if not rows:
            return
        with self._write() as conn:
            for start in range(0, len(rows), schema.CHUNK):
                conn.execute(self._insert(self._t["embeddings"]).on_conflict_do_nothing(), rows[start:start + schema.CHUNK])

    def get_user_vectors(self, kind: str, user_ids: Iterable[str], *, fresh: bool = False) -> dict[str, UserVector]:
        """user id -> stored vector of this kind. `fresh=True` leaves out vectors computed from an
        older history version than the user's current one (read in the same snapshot)."""
        table, users = self._t["user_vectors"], self._t["users"]
        s = schema.sa()
        ids = list(dict.fromkeys(user_ids))
        query = s.select(table.c.user_id, table.c.vector, table.c.count, table.c.history_version)
        if fresh:
            query = query.join(users, users.c.user_id == table.c.user_id).where(
                users.c.history_version == table.c.history_version)
        found: dict[str, UserVector] = {}
        with self._read() as conn:
            for start in range(0, len(ids), schema.CHUNK):
                rows = conn.execute(query.where(table.c.kind == kind, table.c.user_id.in_(ids[start:start + schema.CHUNK])))
                for user_id, blob, count, version in rows:
                    found[user_id] = UserVector(np.frombuffer(blob, dtype="<f4").astype(np.float32), int(count), int(version))
        return found

    def put_user_vectors(self, kind: str, vectors: Mapping[str, UserVector]) -> None:
        """Store (replace) user vectors of this kind; unknown users: InputError."""
        if not isinstance(kind, str) or not kind:
            raise InputError(f"put_user_vectors: kind must be a non-empty string, got {kind!r}")
        rows = []
        for user_id, value in vectors.items():
            if not isinstance(value, UserVector):
                raise InputError(f"put_user_vectors: value for {user_id!r} is a {type(value).__name__}, expected UserVector")
            rows.append({"kind": kind, "user_id": user_id, "count": int(value.count),
                         "history_version": int(value.history_version), **vector_blob(value.vector, f"user {user_id!r}")})
        if not rows:
            return
        users = self._t["users"]
        s = schema.sa()
        with self._write() as conn:
            ids = [r["user_id"] for r in rows]
            known: set[str] = set()
            for start in range(0, len(ids), schema.CHUNK):
                known.update(r[0] for r in conn.execute(
                    s.select(users.c.user_id).where(users.c.user_id.in_(ids[start:start + schema.CHUNK]))))
            missing = [i for i in ids if i not in known]
            if missing:
                raise InputError(f"put_user_vectors: unknown user(s) {missing[:5]} in {self.url}")
            stmt = self._insert(self._t["user_vectors"])
            stmt = stmt.on_conflict_do_update(
                index_elements=["kind", "user_id"],
                set_={name: getattr(stmt.excluded, name) for name in ("dim", "count", "history_version", "vector")})
            for start in range(0, len(rows), schema.CHUNK):
                conn.execute(stmt, rows[start:start + schema.CHUNK])
