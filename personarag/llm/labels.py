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


# ---- calibrated choice -----------------------------------------------------------------------
# Raw label likelihoods of small models carry a strong label prior (Qwen-0.5B answered the first
# LaMP-2 tag for 40 of 40 dev examples). Two corrections, both options of the label choice:
# - length normalisation: the mean log-probability per answer token instead of the sum, so
#   multi-token labels ("social commentary") are not penalised for their length;
# - contextual calibration (Zhao et al., 2021, "Calibrate Before Use"): the label distribution
#   under a content-free input ("N/A", and optionally "" or "[MASK]", averaged) with the same
#   template is the prior; each prompt's distribution is divided by it and renormalised.

CALIBRATIONS = ("none", "content-free")
#: a prior probability is floored here, so a label the content-free prompt never produces
#: cannot divide by zero (the calibrated log-probability then stays finite)
PRIOR_FLOOR = 1e-30


def answer_token_count(llm: LLM, answer: str) -> int:
    """Tokens of `answer` as `LLM.score` sums them: the backend's answer tokenisation when it has
    one (transformers, vLLM), else its `count_tokens`."""
    answer_ids = getattr(llm, "answer_ids", None)
    count = len(answer_ids(answer)) if callable(answer_ids) else llm.count_tokens(answer)
    return max(1, int(count))


@dataclass(frozen=True)
class LabelChoice:
    """One prompt's label choice: the raw sums, the values compared (per-token means under
    length normalisation), the final distribution (calibrated when a prior is given) and the winner."""

    labels: tuple[str, ...]
    raw: tuple[float, ...]  # log P(prefix + label | prompt), summed over tokens
    values: tuple[float, ...]  # raw, or raw / tokens under length normalisation
    probabilities: tuple[float, ...] | None  # softmax(values), divided by the prior when given
    prior: tuple[float, ...] | None = None
    usage: Usage = Usage()
    cached: bool = False

    @property
    def best(self) -> int:
        """Index of the chosen label; ties (and a prompt with no finite value) go to the earlier label."""
        if self.probabilities is None:
            return LabelScores(self.labels, self.values).best
        return max(range(len(self.labels)), key=lambda j: (self.probabilities[j], -j))  # type: ignore[index]

    @property
    def label(self) -> str:
        return self.labels[self.best]

    def trace(self) -> dict[str, object]:
        info: dict[str, object] = {"logprobs": dict(zip(self.labels, self.raw))}
        if self.values != self.raw:
            info["per_token"] = dict(zip(self.labels, self.values))
        if self.prior is not None:
            info["prior"] = dict(zip(self.labels, self.prior))
            if self.probabilities is not None:
                info["calibrated"] = dict(zip(self.labels, self.probabilities))
        return info


def calibrate(probabilities: Sequence[float], prior: Sequence[float]) -> tuple[float, ...]:
    """`probabilities / prior`, renormalised (contextual calibration's diagonal W = diag(prior)^-1)."""
    if len(probabilities) != len(prior):
        raise InputError(f"calibrate: {len(probabilities)} probabilities but a prior over {len(prior)} labels")
    if any(not math.isfinite(q) or q < 0 for q in prior) or sum(prior) <= 0:
        raise InputError(f"calibrate: the prior must be non-negative and sum above 0, got {list(prior)}")
    weights = [p / max(q, PRIOR_FLOOR) for p, q in zip(probabilities, prior)]
    total = sum(weights)
    return tuple(w / total for w in weights) if total > 0 else tuple(probabilities)


def _values(llm: LLM, scores: LabelScores, answers: Sequence[str], length_norm: bool) -> tuple[float, ...]:
    if not length_norm:
        return scores.logprobs
    return tuple(lp / answer_token_count(llm, a) for lp, a in zip(scores.logprobs, answers))


def label_prior(
    llm: LLM, content_free_prompts: Sequence[PromptLike], labels: Sequence[str], *, prefix: str = "", length_norm: bool = False
) -> tuple[float, ...]:
    """The label distribution under the content-free prompts, averaged over them (then renormalised).
    A content-free prompt under which no label has a finite log-probability is an InputError."""
    labels = tuple(labels)
    if not content_free_prompts:
        raise InputError("label_prior needs at least one content-free prompt")
    answers = [prefix + label for label in labels]
    total = [0.0] * len(labels)
    for prompt, scores in zip(content_free_prompts, score_labels(llm, content_free_prompts, labels, prefix=prefix)):
        probabilities = normalised(_values(llm, scores, answers, length_norm))
        if probabilities is None:
            raise InputError(f"label_prior: no label {list(labels)} has a finite log-probability under the "
                             f"content-free prompt {str(prompt)[:120]!r}")
        total = [t + p for t, p in zip(total, probabilities)]
    mass = sum(total)
    return tuple(t / mass for t in total)


def choose_labels(
    llm: LLM,
    prompts: Sequence[PromptLike],
    labels: Sequence[str],
    *,
    prefix: str = "",
    length_norm: bool = False,
    prior: Sequence[float] | None = None,
) -> list[LabelChoice]:
    """Each prompt's label: by summed log-probability (the default), by the mean per token
    (`length_norm`), and divided by a `prior` from `label_prior` (contextual calibration)."""
    labels = tuple(labels)
    if prior is not None and len(prior) != len(labels):
        raise InputError(f"choose_labels: a prior over {len(prior)} labels for {len(labels)} labels")
    answers = [prefix + label for label in labels]
    out = []
    for scores in score_labels(llm, prompts, labels, prefix=prefix):
        values = _values(llm, scores, answers, length_norm)
        probabilities = normalised(values)
        if prior is not None and probabilities is not None:
            probabilities = calibrate(probabilities, prior)
        out.append(LabelChoice(labels, scores.logprobs, values, probabilities,
                               None if prior is None else tuple(prior), scores.usage, scores.cached))
    return out
