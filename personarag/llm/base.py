"""The one LLM interface used by rerankers and generators.

Two operations, both on batches of chat prompts:
- `generate`: sampled or greedy text (n samples per prompt);
- `score`: log-probabilities of given answer strings as the continuation of each prompt
  (yes/no relevance, 0..k digit scores).
Backends implement `_generate` / `_score` on the prompts the cache could not serve;
the base class does validation, caching and usage accounting.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

from personarag.component import Component
from personarag.errors import InputError
from personarag.types import Usage


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
        object.__setattr__(self, "stop", tuple(self.stop))


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


class LLM(Component):
    role: ClassVar[str] = "llm"

    @property
    @abstractmethod
    def model_name(self) -> str:
        """Identifies the weights (hub name or resolved path); part of every cache key."""

    def generate(self, prompts: Sequence[PromptLike], config: GenerationConfig | None = None) -> list[Completion]:
        chats = [as_chat(p) for p in prompts]
        return self._generate(chats, config or GenerationConfig()) if chats else []

    def score(self, prompts: Sequence[PromptLike], answers: Sequence[str]) -> list[AnswerScores]:
        answers = list(answers)
        if not answers:
            raise InputError("score() needs at least one candidate answer")
        chats = [as_chat(p) for p in prompts]
        return self._score(chats, answers) if chats else []

    def count_tokens(self, text: str) -> int:
        """Token count; backends with a tokenizer override this rough 4-characters-a-token rule."""
        return max(1, len(text) // 4)

    def truncate(self, text: str, max_tokens: int) -> str:
        """`text` cut to at most `max_tokens` tokens."""
        return text[: max_tokens * 4]

    @abstractmethod
    def _generate(self, chats: list[Chat], config: GenerationConfig) -> list[Completion]: ...

    @abstractmethod
    def _score(self, chats: list[Chat], answers: list[str]) -> list[AnswerScores]: ...

    def close(self) -> None:
        """Release model memory or connections; a no-op by default."""

    def extra_key(self) -> dict[str, Any]:
        """Backend settings that change outputs, added to cache keys."""
        return {}
