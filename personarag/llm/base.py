"""The one LLM interface used by rerankers and generators.

Three operations, all on batches of chat prompts:
- `generate`: sampled or greedy text (n samples per prompt);
- `score`: log-probabilities of given answer strings as the continuation of each prompt
  (yes/no relevance, 0..k digit scores). A multi-token answer gets the sum of its
  tokens' log-probabilities, i.e. log P(whole answer | prompt). The prompt is computed
  once for all answers where the backend can (transformers: its key/value cache; vLLM:
  prefix caching). `personarag.llm.labels.score_labels` reads label distributions from it;
- `permute`: greedy generation constrained to a permutation of given labels
  (transformers and vLLM: a logits processor; OpenAI-compatible: a vLLM server's structured
  outputs, one identifier at a time, when asked for; backends without a way raise InputError).
Backends implement `_generate` / `_score` on the prompts the cache could not serve;
the base class does validation, caching (`personarag.llm.cache`) and usage accounting.

Caching: every LLM with a `cache_dir` attribute ("auto" = `$PERSONARAG_CACHE_DIR/llm`
when that variable is set, else off; None = off; a path = that directory) stores each
finished result under a hash of (backend, model, messages, operation, parameters or
answers, `extra_key()`). Greedy requests ignore `seed` and `top_p` in the key; sampled
ones (temperature > 0) are cached per seed. A served-from-cache result has
`cached=True` and `Usage(cached_calls=1)` with zero backend calls and tokens.
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
import math
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

from personarag.component import Component
from personarag.errors import InputError
from personarag.llm.cache import LLMCache, open_cache, request_key, resolve_cache_dir
from personarag.types import Usage

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    role: str  # "system" | "user" | "assistant"
    content: str

    def __post_init__(self) -> None:
        if self.role not in ("system", "user", "assistant"):
            raise InputError(f"message role must be system, user or assistant, got {self.role!r}")
        if not isinstance(self.content, str):
            raise InputError(f"message content must be a string, got {type(self.content).__name__}")


Chat = tuple[Message, ...]
PromptLike = Union[str, Sequence[Union[Message, Mapping[str, str]]]]


def as_chat(prompt: PromptLike) -> Chat:
    """A plain string becomes one user message; dicts {"role", "content"} become Messages."""
    if isinstance(prompt, str):
        return (Message("user", prompt),)
    chat = []
    for position, message in enumerate(prompt):
        if isinstance(message, Message):
            chat.append(message)
        elif isinstance(message, Mapping) and {"role", "content"} <= set(message):
            chat.append(Message(message["role"], message["content"]))
        else:
            raise InputError(f"prompt message {position}: expected Message or {{role, content}}, got {message!r}")
    if not chat:
        raise InputError("a prompt needs at least one message")
    return tuple(chat)


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    n: int = 1  # samples per prompt
    seed: int = 0
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.n < 1:
            raise InputError(f"max_new_tokens and n must be >= 1, got {self.max_new_tokens}, {self.n}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise InputError(f"temperature must be >= 0 and top_p in (0, 1], got {self.temperature}, {self.top_p}")
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        if any(not isinstance(s, str) or not s for s in stop):
            raise InputError(f"stop must be non-empty strings, got {stop!r}")
        object.__setattr__(self, "stop", stop)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class Completion:
    texts: tuple[str, ...]
    usage: Usage = Usage()
    cached: bool = False

    @property
    def text(self) -> str:
        return self.texts[0]


@dataclass(frozen=True)
class AnswerScores:
    """log P(answer | prompt) for each candidate answer string, in the order asked."""

    logprobs: Mapping[str, float] = field(default_factory=dict)
    usage: Usage = Usage()
    cached: bool = False


class PartialBatchError(Exception):
    """Raised by a backend whose batch failed part-way: `done` (batch position -> result) is
    cached by the base class before `error`, the real failure, is re-raised."""

    def __init__(self, done: Mapping[int, Any], error: BaseException) -> None:
        super().__init__(str(error))
        self.done = dict(done)
        self.error = error


# Where a backend hands each finished result while its batch is still running (see `_result_ready`).
_RESULT_SINK: contextvars.ContextVar[Callable[[int, Any], None] | None] = contextvars.ContextVar("result_sink", default=None)


def chat_payload(chat: Chat) -> list[list[str]]:
    return [[m.role, m.content] for m in chat]


class LLM(Component):
    role: ClassVar[str] = "llm"

    @property
    @abstractmethod
    def model_name(self) -> str:
        """Identifies the weights (hub name or resolved path); part of every cache key."""

    # ---- public operations -------------------------------------------------------------
    def generate(self, prompts: Sequence[PromptLike], config: GenerationConfig | None = None) -> list[Completion]:
        config = config or GenerationConfig()
        if not isinstance(config, GenerationConfig):
            raise InputError(f"config must be a GenerationConfig, got {type(config).__name__}")
        chats = _as_chats(prompts)
        params = _generation_key_params(config)
        return self._cached_batch(
            "generate",
            chats,
            params,
            run=lambda todo: self._generate(todo, config),
            to_json=lambda c: {"texts": list(c.texts), "usage": _usage_json(c.usage)},
            from_json=lambda v: Completion(tuple(v["texts"]), Usage(cached_calls=1), cached=True),
            check=lambda c: isinstance(c, Completion) and len(c.texts) == config.n,
        )

    def score(self, prompts: Sequence[PromptLike], answers: Sequence[str]) -> list[AnswerScores]:
        if isinstance(answers, str):
            raise InputError(f"answers must be a list of strings, got the string {answers!r}")
        answers = list(answers)
        if not answers:
            raise InputError("score() needs at least one candidate answer")
        for answer in answers:
            if not isinstance(answer, str) or not answer:
                raise InputError(f"each answer must be a non-empty string, got {answer!r}")
        if len(set(answers)) != len(answers):
            raise InputError(f"answers must be distinct, got {answers}")
        chats = _as_chats(prompts)

        def from_json(value: Mapping[str, Any]) -> AnswerScores:
            logprobs = {a: float(value["logprobs"][a]) for a in answers}
            return AnswerScores(logprobs, Usage(cached_calls=1), cached=True)

        return self._cached_batch(
            "score",
            chats,
            {"answers": answers},
            run=lambda todo: self._score(todo, answers),
            to_json=lambda s: {"logprobs": {a: _finite_or_str(s.logprobs[a]) for a in answers}, "usage": _usage_json(s.usage)},
            from_json=from_json,
            check=lambda s: isinstance(s, AnswerScores) and list(s.logprobs) == answers,
        )

    def permute(self, prompts: Sequence[PromptLike], labels: Sequence[str], config: GenerationConfig | None = None) -> list[Completion]:
        """Greedy generation that can only emit a permutation of `labels` as `[B] > [A] > [C]`
        (each label once, every label present): a listwise answer that is always valid.
        Labels must be single tokens; backends without constrained decoding raise InputError."""
        labels = list(labels)
        if isinstance(labels, str) or len(labels) < 2 or len(set(labels)) != len(labels) or not all(isinstance(x, str) and x for x in labels):
            raise InputError(f"permute needs at least two distinct non-empty labels, got {labels!r}")
        config = config or GenerationConfig()
        return self._cached_batch(
            "permute",
            _as_chats(prompts),
            {"labels": labels},
            run=lambda todo: self._permute(todo, labels, config),
            to_json=lambda c: {"texts": list(c.texts), "usage": _usage_json(c.usage)},
            from_json=lambda v: Completion(tuple(v["texts"]), Usage(cached_calls=1), cached=True),
            check=lambda c: isinstance(c, Completion) and len(c.texts) == 1,
        )

    def _permute(self, chats: list[Chat], labels: list[str], config: GenerationConfig) -> list[Completion]:
        raise InputError(
            f"the {self.spec_name or type(self).__name__} backend cannot constrain generation to a permutation; "
            "use the transformers or vllm backend, or listwise scoring='first-token'"
        )

    def count_tokens(self, text: str) -> int:
        """Token count; backends with a tokenizer override this rough 4-characters-a-token rule."""
        return max(1, len(text) // 4)

    def truncate(self, text: str, max_tokens: int) -> str:
        """`text` cut to at most `max_tokens` tokens."""
        return text[: max_tokens * 4]

    @property
    def usage_total(self) -> Usage:
        """Everything this object has done so far, cached results included."""
        return getattr(self, "_usage_total", Usage())

    # ---- what backends implement ---------------------------------------------------------
    @abstractmethod
    def _generate(self, chats: list[Chat], config: GenerationConfig) -> list[Completion]: ...

    @abstractmethod
    def _score(self, chats: list[Chat], answers: list[str]) -> list[AnswerScores]: ...

    def _result_ready(self, position: int, output: Any) -> None:
        """Backends call this as each prompt of a `_generate`/`_score` batch finishes (position in
        that batch): the result is cached at once, so a kill mid-batch loses only the calls in flight."""
        sink = _RESULT_SINK.get()
        if sink is not None:
            sink(position, output)

    def load(self) -> None:
        """Load the model now instead of on the first call (a server's readiness means it);
        a no-op for backends with nothing to load, such as a remote server."""

    def close(self) -> None:
        """Release model memory or connections; a no-op by default."""

    def extra_key(self) -> dict[str, Any]:
        """Backend settings that change outputs, added to cache keys."""
        return {}

    def validate(self) -> None:
        """Cheap checks before any run (no weights loaded): the cache folder is usable; backends
        add theirs (the model path exists, the server URL is well formed)."""
        super().validate()
        _ = self.cache  # opens (creates) the cache folder: InputError when it is unusable

    # ---- caching -------------------------------------------------------------------------
    @property
    def cache(self) -> LLMCache | None:
        """The on-disk cache this LLM uses, from its `cache_dir` attribute (None: no caching)."""
        directory = resolve_cache_dir(getattr(self, "cache_dir", None))
        return open_cache(directory) if directory is not None else None

    def _request_key(self, operation: str, chat: Chat, params: Mapping[str, Any]) -> str:
        return request_key(
            {
                "backend": self.spec_name or type(self).__name__,
                "model": self.model_name,
                "messages": chat_payload(chat),
                "operation": operation,
                "params": dict(params),
                "extra": self.extra_key(),
            }
        )

    def _cached_batch(
        self,
        operation: str,
        chats: list[Chat],
        params: Mapping[str, Any],
        run: Callable[[list[Chat]], list[Any]],
        to_json: Callable[[Any], Any],
        from_json: Callable[[Any], Any],
        check: Callable[[Any], bool],
    ) -> list[Any]:
        if not chats:
            return []
        cache = self.cache
        results: list[Any] = [None] * len(chats)
        keys: list[str] = []
        if cache is not None:
            keys = [self._request_key(operation, chat, params) for chat in chats]
            found = cache.get_many(set(keys))
            for position, key in enumerate(keys):
                if key in found:
                    try:
                        results[position] = from_json(found[key])
                    except (KeyError, TypeError, ValueError):
                        logger.warning("LLM cache: entry %s has an unexpected shape; recomputing it", key[:12])
        todo = [i for i, r in enumerate(results) if r is None]
        # identical prompts in one batch are computed once
        unique: dict[Any, int] = {}
        for i in todo:
            unique.setdefault(keys[i] if keys else chats[i], i)
        first = list(unique.values())
        failure: BaseException | None = None
        fresh: dict[int, Any] = {}
        stored: set[int] = set()

        def store_now(j: int, output: Any) -> None:
            if cache is not None and 0 <= j < len(first) and j not in stored and check(output):
                cache.put(keys[first[j]], to_json(output))
                stored.add(j)

        if first:
            token = _RESULT_SINK.set(store_now)
            try:
                outputs = run([chats[i] for i in first])
                if len(outputs) != len(first):
                    raise RuntimeError(f"{type(self).__name__}.{operation} returned {len(outputs)} results for {len(first)} prompts")
                fresh = dict(enumerate(outputs))
            except PartialBatchError as partial:
                fresh, failure = partial.done, partial.error
            finally:
                _RESULT_SINK.reset(token)
            for j, output in fresh.items():
                if not check(output):
                    raise RuntimeError(f"{type(self).__name__}.{operation} returned a malformed result: {output!r}")
            if cache is not None and fresh:
                cache.put_many({keys[first[j]]: to_json(output) for j, output in fresh.items() if j not in stored})
        by_source = {first[j]: output for j, output in fresh.items()}
        for i in todo:
            source = unique[keys[i] if keys else chats[i]]
            if source in by_source:
                output = by_source[source]
                results[i] = output if source == i else dataclasses.replace(output, usage=Usage(cached_calls=1), cached=True)
        done = [r for r in results if r is not None]
        self._usage_total = self.usage_total + Usage.total(r.usage for r in done)
        if failure is not None:
            raise failure
        return results


def _as_chats(prompts: Sequence[PromptLike]) -> list[Chat]:
    if isinstance(prompts, (str, Message)):
        raise InputError(f"prompts must be a list of prompts, got a single {type(prompts).__name__}; wrap it in a list")
    return [as_chat(p) for p in prompts]


def _generation_key_params(config: GenerationConfig) -> dict[str, Any]:
    params = dataclasses.asdict(config)
    params["stop"] = list(config.stop)
    if config.temperature == 0:  # greedy: seed and top_p change nothing
        params.pop("seed")
        params.pop("top_p")
    return params


def _usage_json(usage: Usage) -> dict[str, Any]:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens, "seconds": usage.seconds}


def _finite_or_str(value: float) -> float | str:
    """JSON has no infinities: -inf is stored as the string "-inf"."""
    return value if math.isfinite(value) else str(value)


def apply_stop(text: str, stop: Sequence[str]) -> str:
    """Cut at the first stop string (which is dropped), as every backend must."""
    cut = min((text.find(s) for s in stop if s in text), default=-1)
    return text if cut < 0 else text[:cut]


def split_usage(total_seconds: float, prompt_tokens: Sequence[int], completion_tokens: Sequence[int]) -> list[Usage]:
    """Per-prompt Usage for one batched backend call: one call each, the wall time shared evenly."""
    share = total_seconds / max(1, len(prompt_tokens))
    return [Usage(calls=1, prompt_tokens=p, completion_tokens=c, seconds=share) for p, c in zip(prompt_tokens, completion_tokens)]
