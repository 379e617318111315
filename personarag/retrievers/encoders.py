"""Sentence encoders: a thin, reusable layer over sentence-transformers.

Used by the dense retriever for documents and queries and by the collaborative
retriever for user embeddings. Embeddings always come back as float32 numpy arrays.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from personarag.errors import InputError, require

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)

_PREFIX_BYTES = 1 << 16  # bytes of each large file hashed at each end for the fingerprint
_SMALL_FILE = 1 << 20


def check_device(device: str | None) -> str | None:
    """Accept None (sentence-transformers picks), 'cpu', 'cuda', 'cuda:N' or 'mps'."""
    if device is None:
        return None
    if not isinstance(device, str) or not (
        device in ("cpu", "cuda", "mps") or (device.startswith("cuda:") and device[5:].isdigit())
    ):
        raise InputError(f"device must be None, 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}")
    return device


def set_threads(threads: int | None) -> None:
    """Set torch's (and faiss's, when loaded) CPU thread count; None leaves them alone."""
    if threads is None:
        return
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise InputError(f"threads must be a positive integer or None, got {threads!r}")
    torch = require("torch", "dense")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(threads)


def model_fingerprint(model: str | Path, revision: str | None = None) -> str:
    """A stable identity for a model: its files' names, sizes and contents for a local folder, else name@revision.

    Large files are hashed by their first and last 64 KiB plus their size, which is enough to tell
    two checkpoints apart without reading gigabytes; copies of the same folder get the same identity.
    """
    path = Path(model)
    if not path.is_dir():
        return f"hub:{model}@{revision or 'default'}"
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path).as_posix()
        if rel.startswith(".") or "/." in rel or "__pycache__" in rel:
            continue
        size = file.stat().st_size
        digest.update(f"{rel}\0{size}\0".encode())
        with file.open("rb") as handle:
            if size <= _SMALL_FILE:
                digest.update(handle.read())
            else:
                digest.update(handle.read(_PREFIX_BYTES))
                handle.seek(size - _PREFIX_BYTES)
                digest.update(handle.read(_PREFIX_BYTES))
    return f"dir:{digest.hexdigest()}"


class SentenceEncoder:
    """A loaded sentence-transformers model that encodes texts to float32 embeddings.

    `texts_encoded` counts every text this encoder has embedded, so callers (and tests) can
    tell a cache hit from a re-encoding.
    """

    def __init__(
        self,
        model: str | Path,
        device: str | None = None,
        *,
        max_seq_length: int | None = None,
        revision: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        st = require("sentence_transformers", "dense", purpose="dense encoders")
        self.name = str(model)
        self.revision = revision
        self.device = check_device(device)
        try:
            self.model = st.SentenceTransformer(
                self.name, device=self.device, revision=revision, trust_remote_code=trust_remote_code
            )
        except OSError as error:
            raise InputError(
                f"could not load sentence-transformers model {self.name!r}: not a local model folder and "
                f"not fetchable from the hub ({error})"
            ) from error
        if max_seq_length is not None:
            if not isinstance(max_seq_length, int) or max_seq_length < 1:
                raise InputError(f"max_seq_length must be a positive integer, got {max_seq_length!r}")
            self.model.max_seq_length = max_seq_length
        self.texts_encoded = 0
        self._fingerprint: str | None = None

    @property
    def dim(self) -> int:
        getter = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(getter())

    @property
    def max_seq_length(self) -> int | None:
        return getattr(self.model, "max_seq_length", None)

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.name, self.revision)
        return self._fingerprint

    def resolve_prompt(self, prompt: str | None, task: str | None = None) -> str:
        """The prompt actually prepended: `prompt` if given, else the model's own prompt for `task`
        ('query' / 'document' in its config), else its default prompt, else none."""
        if prompt is not None:
            return prompt
        prompts = getattr(self.model, "prompts", None) or {}
        if task is not None and task in prompts:
            return prompts[task] or ""
        default = getattr(self.model, "default_prompt_name", None)
        return (prompts.get(default) or "") if default else ""

    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 32,
        normalize: bool = True,
        prompt: str | None = None,
        task: str | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Embed `texts` as a (len(texts), dim) float32 array.

        `prompt` is prepended to each text (e5/bge style "query: "); None means the model's own
        prompt for `task` ("query" or "document"), if its config defines one. `task` also routes
        inputs in models with a query/document Router.
        """
        np = require("numpy", "dense")
        if isinstance(texts, str):
            raise InputError("encode expects a sequence of strings, got a single string")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        if task not in (None, "query", "document"):
            raise InputError(f"task must be None, 'query' or 'document', got {task!r}")
        texts = list(texts)
        for position, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"texts[{position}] is a {type(text).__name__}, expected str")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if show_progress is None:
            show_progress = len(texts) > 4 * batch_size and sys.stderr.isatty()
        kwargs: dict[str, Any] = {"task": task} if task is not None else {}
        embeddings = self.model.encode(
            texts,
            prompt=self.resolve_prompt(prompt, task),  # always a string: no silent default prompt
            batch_size=batch_size,
            show_progress_bar=show_progress,
            normalize_embeddings=normalize,
            convert_to_numpy=True,
            device=self.device,
            **kwargs,
        )
        self.texts_encoded += len(texts)
        return np.ascontiguousarray(embeddings, dtype=np.float32)

    def __repr__(self) -> str:
        return f"SentenceEncoder({self.name!r}, device={self.device!r})"


def embedding_cache_key(model: str | Path, revision: str | None = None, **options: Any) -> str:
    """A hash of the model identity and the encoding options (JSON values): the key of cached embeddings.

    It needs no loaded model, so a cache hit costs no model load.
    """
    payload = {"model": model_fingerprint(model, revision), **options}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def load_sentence_encoder(model: str | Path, device: str | None = None, **options: Any) -> SentenceEncoder:
    """Load any sentence-transformers model by local path or hub name (`options`: those of SentenceEncoder)."""
    return SentenceEncoder(model, device, **options)
