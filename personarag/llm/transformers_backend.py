"""The transformers backend: any causal LM folder, hub name or GGUF file, on CPU or GPU.

- Prompts are rendered with the tokenizer's chat template. A tokenizer without one falls
  back to plain `role: content` lines ending in `assistant:` (logged once as a warning;
  `uses_chat_template` tells which).
- Greedy generation is batched (left padding, longest-first batches of `max_batch_size`).
  Sampling (temperature > 0) runs prompt by prompt under `torch.manual_seed(seed)` in a
  forked RNG, so a prompt's samples depend only on (prompt, seed): that is what makes
  caching per seed sound. Greedy with n > 1 returns n copies of the one greedy text.
- `score`: log P(answer | prompt) where the answer's tokens follow the assistant-turn
  prefix; a multi-token answer gets the sum of its tokens' log-probabilities. Tokens that
  every answer starts with (the "[" of "[A", "[B") are appended to the prompt. When the
  answers then differ in one token, one forward pass per prompt reads them all from the
  last position (prompts batched with left padding). Otherwise (`shared_prefix=True`,
  default) each prompt runs once and every answer continues from its key/value cache, so
  15 labels cost one long pass and one short batch, not 15 long passes;
  `shared_prefix=False` runs each (prompt, answer) pair as its own sequence (same numbers
  to ~1e-5, kept as the reference).
- Prompts longer than `max_context_tokens` (default: the model's
  `max_position_embeddings`) minus the room needed for the output are, with
  `on_overflow="truncate"` (default), cut from the left of the last user message (its
  end, usually the question, is kept; a warning is logged); `on_overflow="error"` raises.
- `threads` calls `torch.set_num_threads` (process-wide) when the model loads.
- `adapter`: a LoRA adapter folder (peft) applied on top of the base and merged; the spec
  `transformers:BASE+ADAPTER` sets it (e.g. `pointwise:BASE+ADAPTER` after
  `personarag train pointwise`). It is part of `model_name`, hence of cache keys.
- A GGUF file is dequantised once into a float32 copy (several times its size) under
  `gguf_cache_dir` (default `$PERSONARAG_CACHE_DIR/gguf`, else `~/.cache/personarag/gguf`);
  the first conversion logs a warning that names the folder.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from personarag.errors import InputError, require
from personarag.llm.base import LLM, Chat, Completion, GenerationConfig, Message, apply_stop, split_usage
from personarag.llm.transformers_scoring import TransformersScoring, _until_end
from personarag.llm.hf_loading import (
    HFTokens,
    check_model_arg,
    check_model_source,
    converted_gguf,
    local_name,
    resolve_device,
    resolve_dtype,
    weights_fingerprint,
)

logger = logging.getLogger(__name__)



class TransformersLLM(TransformersScoring, HFTokens, LLM):
    spec_name = "transformers"

    def __init__(
        self,
        model: str,
        *,
        gguf_file: str | None = None,
        dtype: str = "auto",
        device: str = "cpu",
        threads: int | None = None,
        max_batch_size: int = 8,
        max_context_tokens: int | None = None,
        on_overflow: str = "truncate",
        revision: str | None = None,
        trust_remote_code: bool = False,
        cache_dir: str | None = "auto",
        gguf_cache_dir: str | None = None,
        adapter: str | None = None,
        shared_prefix: bool = True,
    ) -> None:
        if adapter is None and "+" in check_model_arg(model):
            model, adapter = model.rsplit("+", 1)
            if not model or not adapter:
                raise InputError(f"expected BASE+ADAPTER, got {model}+{adapter!r}")
        self.adapter = adapter
        self.shared_prefix = bool(shared_prefix)
        if on_overflow not in ("truncate", "error"):
            raise InputError(f"on_overflow must be 'truncate' or 'error', got {on_overflow!r}")
        if max_batch_size < 1 or (threads is not None and threads < 1):
            raise InputError(f"max_batch_size and threads must be >= 1, got {max_batch_size}, {threads}")
        path = Path(model).expanduser()
        if gguf_file is None and path.suffix == ".gguf" and path.is_file():
            model, gguf_file = str(path.parent), path.name
        self.model = model
        self.gguf_file = gguf_file
        self.dtype, self.device, self.threads = dtype, device, threads
        self.max_batch_size = max_batch_size
        self.max_context_tokens = max_context_tokens
        self.on_overflow = on_overflow
        self.revision, self.trust_remote_code = revision, trust_remote_code
        self.cache_dir = cache_dir
        self.gguf_cache_dir = gguf_cache_dir
        self._hf: Any = None
        self._tokenizer: Any = None
        self.load_seconds: float | None = None

    # ---- loading -------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        base = local_name(self.model)
        name = f"{base}/{self.gguf_file}" if self.gguf_file else base
        return name + f"+{local_name(self.adapter)}" if self.adapter else name

    def validate(self) -> None:
        super().validate()
        check_model_source(self.model, self.gguf_file)
        if self.adapter:
            check_model_source(self.adapter, what="adapter")

    def load(self) -> None:
        self._load()

    def _load(self) -> None:
        if self._hf is not None:
            return
        torch = require("torch", "llm")
        transformers = require("transformers", "llm")
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        start = time.perf_counter()
        source = str(converted_gguf(self.model, self.gguf_file, self.gguf_cache_dir)) if self.gguf_file else self.model
        device = resolve_device(self.device)
        common = {"revision": self.revision, "trust_remote_code": self.trust_remote_code}
        tokenizer = transformers.AutoTokenizer.from_pretrained(source, **common)
        model = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=resolve_dtype(self.dtype, device), **common)
        if self.adapter:
            peft = require("peft", "train", purpose=f"loading the adapter {self.adapter}")
            model = peft.PeftModel.from_pretrained(model, self.adapter).merge_and_unload()
        model.to(device).eval()
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        if tokenizer.pad_token is None:
            raise InputError(f"model {self.model_name}: the tokenizer has neither a pad, an eos nor an unk token to pad with")
        if not getattr(tokenizer, "chat_template", None):
            logger.warning("model %s has no chat template; prompts are rendered as plain 'role: content' lines", self.model_name)
        self._hf, self._tokenizer, self._device = model, tokenizer, device
        self.load_seconds = time.perf_counter() - start

    @property
    def hf_model(self) -> Any:
        self._load()
        return self._hf

    @property
    def tokenizer(self) -> Any:
        self._load()
        return self._tokenizer

    def context_limit(self) -> int | None:
        if self.max_context_tokens is not None:
            return self.max_context_tokens
        return getattr(self.hf_model.config, "max_position_embeddings", None)

    def extra_key(self) -> dict[str, Any]:
        local = Path(self.model).expanduser()
        weights = local / self.gguf_file if self.gguf_file else local
        return {
            "weights": weights_fingerprint(weights) if weights.exists() else self.revision,
            **({"adapter": weights_fingerprint(Path(self.adapter))} if self.adapter and Path(self.adapter).exists() else {}),
            "dtype": self.dtype,
            "max_context_tokens": self.max_context_tokens,
            "on_overflow": self.on_overflow,
        }

    def close(self) -> None:
        self._hf = self._tokenizer = None

    def _fit(self, chat: Chat, reserve: int, thinking: bool | None = None) -> list[int]:
        """Render, cutting the left of the last user message when the context is too small."""
        ids = self.render(chat, thinking)
        limit = self.context_limit()
        if limit is None or len(ids) + reserve <= limit:
            return ids
        where = f"prompt of {len(ids)} tokens + {reserve} for the output exceeds max_context_tokens={limit}"
        last_user = max((i for i, m in enumerate(chat) if m.role == "user"), default=None)
        if self.on_overflow == "error" or last_user is None:
            raise InputError(f"model {self.model_name}: {where}")
        messages = list(chat)
        content = messages[last_user].content
        for _ in range(4):
            excess = len(ids) + reserve - limit
            if excess <= 0:
                logger.warning("model %s: %s; cut the start of the last user message", self.model_name, where)
                return ids
            encoded = self.tokenizer(content, add_special_tokens=False, return_offsets_mapping=True)
            if excess >= len(encoded.input_ids):
                break
            content = content[encoded["offset_mapping"][excess][0] :]
            messages[last_user] = Message("user", content)
            ids = self.render(tuple(messages), thinking)
        raise InputError(f"model {self.model_name}: {where}, and cutting the last user message does not make it fit")

    def _padded(self, sequences: list[list[int]]) -> tuple[Any, Any, Any]:
        """Left-padded ids, attention mask and position ids (positions count real tokens only)."""
        torch = require("torch", "llm")
        width = max(len(s) for s in sequences)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(s)) + s for s in sequences], device=self._device)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences], device=self._device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return ids, mask, positions

    def _batches(self, order: list[int]) -> list[list[int]]:
        return [order[i : i + self.max_batch_size] for i in range(0, len(order), self.max_batch_size)]

    # ---- generation ------------------------------------------------------------------------
    def _generate(self, chats: list[Chat], config: GenerationConfig) -> list[Completion]:
        torch = require("torch", "llm")
        tqdm = require("tqdm", "llm").tqdm
        prompts = [self._fit(chat, config.max_new_tokens) for chat in chats]
        results: list[Completion | None] = [None] * len(chats)
        if config.greedy:
            order = sorted(range(len(chats)), key=lambda i: -len(prompts[i]))
            groups = self._batches(order)
        else:
            groups = [[i] for i in range(len(chats))]
        for group in tqdm(groups, desc="generate", unit="batch", disable=None if len(groups) > 1 else True):
            start = time.perf_counter()
            ids, mask, _ = self._padded([prompts[i] for i in group])
            with torch.inference_mode(), torch.random.fork_rng(devices=[]):
                if not config.greedy:
                    torch.manual_seed(config.seed)
                out = self.hf_model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    generation_config=self._hf_generation_config(config),
                    tokenizer=self.tokenizer,
                )
            new = out[:, ids.shape[1] :]
            per_prompt = 1 if config.greedy else config.n
            texts, counts = [], []
            for row in new.tolist():
                kept = _until_end(row, self._end_ids())
                counts.append(len(kept))
                texts.append(apply_stop(self.tokenizer.decode(kept, skip_special_tokens=True), config.stop))
            usages = split_usage(
                time.perf_counter() - start,
                [len(prompts[i]) for i in group],
                [sum(counts[k * per_prompt : (k + 1) * per_prompt]) for k in range(len(group))],
            )
            for k, i in enumerate(group):
                mine = texts[k * per_prompt : (k + 1) * per_prompt]
                results[i] = Completion(tuple(mine * config.n if config.greedy else mine), usages[k])
                self._result_ready(i, results[i])
        return results  # type: ignore[return-value]

    def _end_ids(self) -> set[int]:
        ends = self.hf_model.generation_config.eos_token_id
        ends = set(ends if isinstance(ends, list) else [ends] if ends is not None else [])
        return ends | {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id} - {None}

    def _hf_generation_config(self, config: GenerationConfig) -> Any:
        transformers = require("transformers", "llm")
        sampling = {} if config.greedy else {"temperature": config.temperature, "top_p": config.top_p, "top_k": 0}
        return transformers.GenerationConfig(
            max_new_tokens=config.max_new_tokens,
            do_sample=not config.greedy,
            num_return_sequences=1 if config.greedy else config.n,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=sorted(self._end_ids()),
            stop_strings=list(config.stop) or None,
            **sampling,
        )
