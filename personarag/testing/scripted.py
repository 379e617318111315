"""A scripted LLM for deterministic tests of LLM programs (rerankers, generators).

It behaves like a real backend (the base class caches and accounts for it the same way)
but its answers come from a script:

- `responses`: a list of texts handed out in order (one per sample; running out raises),
  a function `chat -> text`, or a dict `substring -> text` (the first key, in insertion
  order, found in the prompt's text wins; no match gives `default`, or raises when
  `default` is None);
- `scores`: a function `(chat, answer) -> log-probability`, or a fixed table
  `answer -> log-probability` used for every prompt; an answer missing from the table
  gets -inf (probability 0).

Tokens are whitespace-separated words, for prompts and completions alike. Every chat it
was asked about is kept in `seen`, in order, for assertions on prompt contents.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

from personarag.errors import InputError
from personarag.llm.base import LLM, AnswerScores, Chat, Completion, GenerationConfig, apply_stop
from personarag.types import Usage

Responses = Union[Sequence[str], Mapping[str, str], Callable[[Chat], str], None]
Scores = Union[Mapping[str, float], Callable[[Chat, str], float], None]


def chat_text(chat: Chat) -> str:
    """The messages' contents joined by newlines: what dict scripts and token counts look at."""
    return "\n".join(m.content for m in chat)


class ScriptedLLM(LLM):
    spec_name = "scripted"

    def __init__(
        self,
        responses: Responses = None,
        scores: Scores = None,
        *,
        default: str | None = None,
        name: str = "scripted",
        cache_dir: str | None = None,
    ) -> None:
        if isinstance(responses, str):
            raise InputError("responses must be a list, a dict or a function, got a single string; wrap it in a list")
        if responses is not None and not (callable(responses) or isinstance(responses, (Sequence, Mapping))):
            raise InputError(f"responses must be a list, a dict or a function, got {type(responses).__name__}")
        if scores is not None and not (callable(scores) or isinstance(scores, Mapping)):
            raise InputError(f"scores must be a dict answer -> logprob or a function, got {type(scores).__name__}")
        self.responses = responses
        self.scores = scores
        self.default = default
        self.name = name
        self.cache_dir = cache_dir
        self.seen: list[Chat] = []
        self.calls = 0
        self._next = 0

    @property
    def model_name(self) -> str:
        return self.name

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def truncate(self, text: str, max_tokens: int) -> str:
        if max_tokens <= 0:
            return ""
        words = list(re.finditer(r"\S+", text))
        return text if len(words) <= max_tokens else text[: words[max_tokens - 1].end()]

    def _respond(self, chat: Chat) -> str:
        script = self.responses
        if script is None:
            if self.default is None:
                raise InputError("ScriptedLLM has no responses and no default; pass responses=... or default=...")
            return self.default
        if callable(script):
            text = script(chat)
        elif isinstance(script, Mapping):
            prompt = chat_text(chat)
            text = next((t for key, t in script.items() if key in prompt), self.default)
            if text is None:
                raise InputError(f"ScriptedLLM: no response key occurs in the prompt {prompt[:200]!r} and no default")
        else:
            if self._next >= len(script):
                raise InputError(f"ScriptedLLM ran out of responses after {len(script)} (prompt: {chat_text(chat)[:200]!r})")
            text = script[self._next]
            self._next += 1
        if not isinstance(text, str):
            raise InputError(f"ScriptedLLM: a response must be a string, got {type(text).__name__}")
        return text

    def _generate(self, chats: list[Chat], config: GenerationConfig) -> list[Completion]:
        out = []
        for chat in chats:
            start = time.perf_counter()
            self.seen.append(chat)
            self.calls += 1
            texts = tuple(apply_stop(self._respond(chat), config.stop) for _ in range(config.n))
            usage = Usage(
                calls=1,
                prompt_tokens=self.count_tokens(chat_text(chat)),
                completion_tokens=sum(self.count_tokens(t) for t in texts),
                seconds=time.perf_counter() - start,
            )
            out.append(Completion(texts, usage))
        return out

    def _score(self, chats: list[Chat], answers: list[str]) -> list[AnswerScores]:
        if self.scores is None:
            raise InputError("ScriptedLLM has no scores; pass scores={answer: logprob} or a function")
        out = []
        for chat in chats:
            start = time.perf_counter()
            self.seen.append(chat)
            self.calls += 1
            if callable(self.scores):
                logprobs = {a: float(self.scores(chat, a)) for a in answers}
            else:
                logprobs = {a: float(self.scores.get(a, float("-inf"))) for a in answers}
            usage = Usage(calls=1, prompt_tokens=self.count_tokens(chat_text(chat)), seconds=time.perf_counter() - start)
            out.append(AnswerScores(logprobs, usage))
        return out

    def validate(self) -> None:
        super().validate()
        if self.responses is None and self.default is None and self.scores is None:
            raise InputError(
                f"ScriptedLLM {self.name!r} has no responses, default or scores, so it cannot answer any prompt; "
                "give responses=..., default=... or scores=... (in a config: {spec: scripted, params: {default: ...}})"
            )

    def extra_key(self) -> dict[str, Any]:
        # A function script is opaque; its name at least separates two scripted models in one cache.
        return {"script": getattr(self.responses, "__qualname__", None) if callable(self.responses) else None}

