"""Rewards for GRPO training of reasoning rerankers (Rank-R1 / ReasonRank style).

Each reward is a small callable with TRL's reward-function signature
`reward(prompts, completions, **dataset_columns) -> list[float]`, one value per completion.
Completions are read with the rerankers' own parsers (`personarag.rerankers.parsing`),
so the policy is rewarded for exactly what the reranker will be able to use.

Dataset columns they read:
- `relevance`: for each prompt, the judged relevance (int, 0 = not relevant) of the
  documents in the order the prompt shows them ([1], [2], ... or A, B, ...).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from personarag.errors import InputError
from personarag.rerankers.parsing import parse_choice, parse_permutation, split_reasoning


def completion_text(completion: Any) -> str:
    """The text of a TRL completion: a string, or a conversational list of messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], dict):
        return "".join(str(m.get("content", "")) for m in completion if m.get("role", "assistant") == "assistant")
    raise InputError(f"a completion must be a string or a list of messages, got {type(completion).__name__}")


def ndcg(order_gains: Sequence[float], all_gains: Sequence[float], k: int) -> float:
    """nDCG@k with linear gains and log2(rank + 1) discounts (trec_eval's ndcg_cut); 0 when nothing is relevant."""
    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    if any(g < 0 for g in all_gains):
        raise InputError(f"gains must be >= 0, got {list(all_gains)}")

    def dcg(gains: Sequence[float]) -> float:
        return sum(g / math.log2(rank + 2) for rank, g in enumerate(gains[:k]))

    ideal = dcg(sorted(all_gains, reverse=True))
    return dcg(order_gains) / ideal if ideal > 0 else 0.0


def _check(completions: Sequence[Any], relevance: Sequence[Sequence[int]]) -> None:
    if len(completions) != len(relevance):
        raise InputError(f"{len(completions)} completions but {len(relevance)} relevance lists; one per completion is expected")


class ListwiseNDCGReward:
    """nDCG@k of the permutation the completion gives, against the shown documents' relevance.

    Unparsable or partial permutations are repaired the way the listwise reranker repairs
    them (missing ids keep their shown order), so the reward is what the reranker would get.
    """

    def __init__(self, k: int = 10) -> None:
        if k < 1:
            raise InputError(f"k must be >= 1, got {k}")
        self.k = k
        self.__name__ = f"ndcg@{k}"

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (), relevance: Sequence[Sequence[int]] = (), **_: Any) -> list[float]:
        _check(completions, relevance)
        out = []
        for completion, gains in zip(completions, relevance):
            order, _ = parse_permutation(completion_text(completion), len(gains))
            out.append(ndcg([gains[i] for i in order], gains, self.k))
        return out


class SetwiseReward:
    """Relevance of the chosen document over the best relevance in the set (0 when no label is read)."""

    __name__ = "setwise_choice"

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (), relevance: Sequence[Sequence[int]] = (), **_: Any) -> list[float]:
        from personarag.rerankers.setwise import LABELS

        _check(completions, relevance)
        out = []
        for completion, gains in zip(completions, relevance):
            choice, _ = parse_choice(completion_text(completion), LABELS[: len(gains)])
            best = max(gains) if gains else 0
            out.append(0.0 if choice is None or best <= 0 else gains[choice] / best)
        return out


class FormatReward:
    """1.0 for a well-formed answer, partial credit otherwise.

    Well-formed: (when `think`) reasoning inside `<think>...</think>` before the answer, and an
    answer the reranker reads without any problem: a complete permutation of the n shown
    ids (listwise) or exactly one label (setwise). Each missing part costs half.
    """

    def __init__(self, kind: str = "listwise", think: bool = True) -> None:
        if kind not in ("listwise", "setwise"):
            raise InputError(f"kind must be listwise or setwise, got {kind!r}")
        self.kind, self.think = kind, think
        self.__name__ = f"format_{kind}"

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (), relevance: Sequence[Sequence[int]] = (), **_: Any) -> list[float]:
        from personarag.rerankers.setwise import LABELS

        _check(completions, relevance)
        out = []
        for completion, gains in zip(completions, relevance):
            text = completion_text(completion)
            parsed = split_reasoning(text)
            score = 0.0
            if self.think and "<think>" in text.lower() and parsed.reasoning and parsed.answer:
                score += 0.5
            if self.kind == "listwise":
                _, answer = parse_permutation(text, len(gains))
                readable = bool(parsed.answer) and not answer.problems
            else:
                choice, answer = parse_choice(text, LABELS[: len(gains)])
                readable = choice is not None and not answer.problems
            if readable:
                score += 0.5 if self.think else 1.0
            out.append(score)
        return out
