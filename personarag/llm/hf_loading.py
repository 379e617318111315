"""Loading helpers for the transformers and vLLM backends: GGUF conversion cache, dtype and device choice,
model names, and token counting and prompt rendering over a Hugging Face tokenizer (`HFTokens`).

GGUF: transformers dequantises a GGUF file on every `from_pretrained(gguf_file=...)`
(~20 s for a 135M model, and ~12 s just for its tokenizer). We do that once and save
the float32 model and its tokenizer as an ordinary safetensors folder under
`gguf_cache_root()/NAME-KEY`, KEY a hash of the GGUF file's resolved path, size and
modification time (so a replaced file converts again). Later loads read that folder in
seconds. The folder is written under a temporary name and renamed into place, so two
processes converting at once never leave a half-written cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from personarag.errors import InputError, require
from personarag.llm.cache import ENV_VAR

logger = logging.getLogger(__name__)

_DONE_MARKER = "personarag-gguf-conversion.json"
_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16"}


def gguf_cache_root(explicit: str | os.PathLike | None = None) -> Path:
    """`explicit`, else `$PERSONARAG_CACHE_DIR/gguf`, else `$XDG_CACHE_HOME/personarag/gguf` (~/.cache/...)."""
    if explicit is not None:
        return Path(explicit).expanduser()
    root = os.environ.get(ENV_VAR, "").strip()
    if root:
        return Path(root).expanduser() / "gguf"
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg) if xdg else Path.home() / ".cache") / "personarag" / "gguf"


def resolve_gguf_path(model: str, gguf_file: str) -> Path:
    """The GGUF file on disk: inside a local folder, or fetched from the hub into its cache."""
    local = Path(model).expanduser() / gguf_file
    if local.is_file():
        return local.resolve()
    if Path(model).expanduser().exists():
        raise InputError(f"GGUF file {gguf_file!r} not found in {model!r}")
    hub = require("huggingface_hub", "llm", purpose="fetching a GGUF file from the hub")
    return Path(hub.hf_hub_download(model, gguf_file)).resolve()


_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")


def check_model_source(model: str, gguf_file: str | None = None, what: str = "model") -> None:
    """InputError when `model` is neither an existing local path nor something that can be a hub
    name ('org/name'); cheap (no download, no weights). With HF_HUB_OFFLINE set, a hub name
    must also be in the local hub cache."""
    path = Path(model).expanduser()
    if path.exists():
        if gguf_file and not (path / gguf_file).is_file():
            raise InputError(f"GGUF file {gguf_file!r} not found in {path}")
        return
    if not _HUB_NAME.match(model) or model.endswith(".gguf"):
        raise InputError(f"{what} path {model} does not exist (and it is not a hub name like 'org/name')")
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        try:
            import huggingface_hub
        except ImportError:
            return
        cached = huggingface_hub.try_to_load_from_cache(model, gguf_file or "config.json")
        if not isinstance(cached, str):
            raise InputError(f"{what} {model!r} is not a local path and HF_HUB_OFFLINE is set, but it is not in the hub cache")


def gguf_cache_key(path: Path) -> str:
    stat = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]


def converted_gguf(model: str, gguf_file: str, cache_root: str | os.PathLike | None = None) -> Path:
    """A safetensors folder holding the dequantised GGUF model and its tokenizer (converted once)."""
    source = resolve_gguf_path(model, gguf_file)
    target = gguf_cache_root(cache_root) / f"{source.stem}-{gguf_cache_key(source)}"
    if (target / _DONE_MARKER).is_file():
        return target
    transformers = require("transformers", "llm", purpose="loading GGUF models")
    torch = require("torch", "llm")
    start = time.perf_counter()
    # A warning, once per GGUF: the float32 copy is several times the GGUF's size (2.4 GB for a 0.6B model)
    # and would otherwise appear silently under the home folder.
    logger.warning(
        "dequantising %s (%.2f GB) once into a float32 safetensors copy at %s; later loads read that copy. "
        "Put it elsewhere with TransformersLLM(gguf_cache_dir=...) or $%s (then under $%s/gguf)",
        source, source.stat().st_size / 1e9, target, ENV_VAR, ENV_VAR,
    )
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    model_obj = transformers.AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name, dtype=torch.float32)
    # The dequantised weights are plain tensors now; without this save_pretrained would
    # record a GGUF quantisation that a later plain load cannot honour.
    model_obj.hf_quantizer = None
    if hasattr(model_obj.config, "quantization_config"):
        del model_obj.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    model_obj.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / _DONE_MARKER).write_text(f'{{"source": "{source}", "seconds": {time.perf_counter() - start:.1f}}}\n')
    try:
        os.rename(staging, target)
    except OSError:  # another process finished first, or a stale unfinished folder is in the way
        if (target / _DONE_MARKER).is_file():
            shutil.rmtree(staging, ignore_errors=True)
        else:
            shutil.rmtree(target, ignore_errors=True)
            os.rename(staging, target)
    size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
    logger.info("converted %s in %.1f s: %.2f GB at %s", source.name, time.perf_counter() - start, size / 1e9, target)
    return target


def resolve_device(device: str) -> str:
    if device == "auto":
        torch = require("torch", "llm")
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str) -> Any:
    torch = require("torch", "llm")
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in _DTYPES:
        raise InputError(f"dtype must be auto or one of {sorted(_DTYPES)}, got {dtype!r}")
    return getattr(torch, _DTYPES[dtype])


class HFTokens:
    """Token counting, truncation and prompt rendering over a Hugging Face tokenizer (`self.tokenizer`),
    shared by the transformers and vLLM backends."""

    tokenizer: Any

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def answer_ids(self, answer: str) -> list[int]:
        """The token ids of an answer to score (no special tokens); an answer of no tokens is an error."""
        ids = list(self.tokenizer(answer, add_special_tokens=False).input_ids)
        if not ids:
            raise InputError(f"answer {answer!r} encodes to no tokens for model {getattr(self, 'model_name', '?')}")
        return ids

    def truncate(self, text: str, max_tokens: int) -> str:
        if max_tokens <= 0:
            return ""
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        if len(encoded.input_ids) <= max_tokens:
            return text
        return text[: encoded["offset_mapping"][max_tokens - 1][1]]

    @property
    def uses_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def render(self, chat: Sequence[Any], thinking: bool | None = None) -> list[int]:
        """Token ids of the prompt up to where the assistant's answer starts; without a chat template,
        plain `role: content` lines ending in `assistant:`. `thinking`: passed as `enable_thinking`
        to templates that read it (Qwen3-style); scoring renders with False so the answer
        position is the answer, not the start of a thinking block. None: the template's default."""
        tok = self.tokenizer
        if self.uses_chat_template:
            options = {"enable_thinking": thinking} if thinking is not None and "enable_thinking" in str(tok.chat_template) else {}
            text = tok.apply_chat_template(
                [{"role": m.role, "content": m.content} for m in chat], tokenize=False, add_generation_prompt=True, **options
            )
            return list(tok(text, add_special_tokens=False).input_ids)
        text = "".join(f"{m.role}: {m.content}\n" for m in chat) + "assistant:"
        return list(tok(text).input_ids)


def local_name(model: str) -> str:
    """A model's name in cache keys: the resolved path of a local folder or file, else the hub name as given."""
    local = Path(model).expanduser()
    return str(local.resolve()) if local.exists() else model


def check_model_arg(model: object) -> str:
    if not isinstance(model, str) or not model.strip():
        raise InputError(f"model must be a local path or hub name, got {model!r}")
    return model


def weights_fingerprint(path: Path) -> str:
    """Names, sizes and modification times of a local model folder's files: changes when the weights do."""
    parts = []
    for file in sorted(path.iterdir()) if path.is_dir() else [path]:
        if file.is_file():
            stat = file.stat()
            parts.append(f"{file.name}|{stat.st_size}|{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
