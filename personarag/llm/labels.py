"""The one answer-scoring primitive: the probability of each label at the answer position.

`score_labels(llm, prompts, labels)` asks `LLM.score` for log P(prefix + label | prompt) of
every label (the full label set, not a top-k list) and returns, per prompt, the labels'
log-probabilities, their distribution renormalised over the label set, and the best label.
Pointwise yes/no and 0..k, setwise `choice="likelihood"`, listwise `scoring="first-token"`
and LaMP's `answer_mode="choose"` all read their answers through it, so every one of them
always yields a valid answer.

`prefix` is text every answer starts with, e.g. "[" before a listwise identifier: its
probability is the same for every label, so it changes no choice and cancels in the
distribution. The transformers backend joins such shared tokens to the prompt and reads
single-token labels from one forward pass; vLLM and OpenAI-compatible servers score
through their own `score` (prompt logprobs / top logprobs; a server without logprobs
raises a clear error there). An OpenAI-compatible server in its default
`score_mode="top_logprobs"` sees only the first answer token, so a `prefix` makes every
label look alike there: use `score_mode="echo"` (exact, multi-token) or labels without a prefix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from personarag.errors import InputError
from personarag.llm.base import LLM, PromptLike
from personarag.types import Usage


@dataclass(frozen=True)
class LabelScores:
    """One prompt's label log-probabilities (log P(prefix + label | prompt)), in label order."""

    labels: tuple[str, ...]
    logprobs: tuple[float, ...]
    usage: Usage = Usage()
    cached: bool = False

    @property
    def probabilities(self) -> tuple[float, ...] | None:
        """The distribution over the label set (softmax of the log-probabilities); None when
        no label has a finite log-probability."""
        return normalised(self.logprobs)

    @property
    def best(self) -> int:
        """Index of the most likely label; ties go to the earlier label."""
        return max(range(len(self.labels)), key=lambda j: (_finite(self.logprobs[j]), -j))

    @property
    def invalid(self) -> list[str]:
        """Labels whose value is no log-probability (nan or +inf: a backend fault)."""
        return [f"{x!r}: {v}" for x, v in zip(self.labels, self.logprobs) if math.isnan(v) or v == math.inf]

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.labels, self.logprobs))


def normalised(logprobs: Sequence[float]) -> tuple[float, ...] | None:
    """Probabilities proportional to exp(logprobs); None when none is finite."""
    finite = [lp for lp in logprobs if math.isfinite(lp)]
    if not finite:
        return None
    top = max(finite)
    weights = [math.exp(lp - top) if math.isfinite(lp) else 0.0 for lp in logprobs]
    total = sum(weights)
    return tuple(w / total for w in weights)


def score_labels(llm: LLM, prompts: Sequence[PromptLike], labels: Sequence[str], *, prefix: str = "") -> list[LabelScores]:
    """Each prompt's label scores (see the module docstring); one `LLM.score` call for all prompts."""
    labels = tuple(labels)
    if len(labels) < 1 or len(set(labels)) != len(labels):
        raise InputError(f"score_labels needs distinct labels, got {list(labels)}")
    answers = [prefix + label for label in labels]
    out = []
    for result in llm.score(prompts, answers):
        values = tuple(float(result.logprobs[a]) for a in answers)
        out.append(LabelScores(labels, values, result.usage, result.cached))
    return out


def _finite(value: float) -> float:
    return value if math.isfinite(value) else -math.inf  # nan and +inf never win
