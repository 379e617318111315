"""The grammar of a constrained listwise answer, `[B] > [A] > [C]`, shared by every backend.

`PermutationGrammar` works on token ids (the transformers and vLLM logits processors ask it
which tokens may come next); `permutation_text` and `next_labels` work on text for servers
that are constrained one identifier at a time (the OpenAI-compatible backend).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from personarag.errors import InputError

OPENER, SEPARATOR, CLOSER = "[", "] > [", "]"


class PermutationGrammar:
    """Generated tokens must spell `opener L1 separator L2 ... Ln closer end`, each label token
    exactly once; `allowed(generated)` is the set of tokens that may come next."""

    def __init__(self, labels: Sequence[int], opener: Sequence[int], separator: Sequence[int], closer: Sequence[int], end: int) -> None:
        self.labels, self.opener, self.separator, self.closer, self.end = list(labels), list(opener), list(separator), list(closer), end
        self.length = len(self.opener) + len(self.labels) + (len(self.labels) - 1) * len(self.separator) + len(self.closer) + 1

    def allowed(self, generated: Sequence[int]) -> list[int]:
        position, used = 0, set()
        for slot in range(len(self.labels)):
            for token in self.opener if slot == 0 else self.separator:
                if position == len(generated):
                    return [token]
                position += 1
            if position == len(generated):
                return [t for t in self.labels if t not in used]
            used.add(generated[position])
            position += 1
        for token in self.closer:
            if position == len(generated):
                return [token]
            position += 1
        return [self.end]

    def as_args(self) -> dict[str, list[int]]:
        """Plain lists (what vLLM's `SamplingParams.extra_args` carries to the engine)."""
        return {"labels": self.labels, "opener": self.opener, "separator": self.separator, "closer": self.closer, "end": [self.end]}

    @classmethod
    def from_args(cls, args: dict[str, list[int]]) -> PermutationGrammar:
        return cls(args["labels"], args["opener"], args["separator"], args["closer"], args["end"][0])


def permutation_text(labels: Sequence[str]) -> str:
    """`[B] > [A] > [C]` for the labels in that order."""
    return OPENER + SEPARATOR.join(labels) + CLOSER


def partial_text(chosen: Sequence[str]) -> str:
    """The answer so far, ready for the next identifier: `[` , `[B] > [`, ..."""
    return OPENER + "".join(f"{x}{SEPARATOR}" for x in chosen)


def token_grammar(answer_ids: Callable[[str], list[int]], labels: Sequence[str], end: int, model: str) -> PermutationGrammar:
    """The grammar in a tokenizer's ids (`answer_ids` encodes text without special tokens);
    InputError when a label is not a single token, which the grammar needs."""
    label_ids = [answer_ids(x) for x in labels]
    if any(len(ids) != 1 for ids in label_ids):
        raise InputError(f"constrained permutations need single-token labels; for {model} these are not: "
                         f"{[x for x, ids in zip(labels, label_ids) if len(ids) != 1]}")
    return PermutationGrammar([ids[0] for ids in label_ids], answer_ids(OPENER), answer_ids(SEPARATOR), answer_ids(CLOSER), end)
