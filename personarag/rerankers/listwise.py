"""Listwise LLM reranking with a sliding window (RankGPT, RankZephyr; ReasonRank-style reasoning).

The window moves from the bottom of the candidate list to the top: it reorders
candidates [n-w, n), then [n-w-s, n-s), ..., down to [0, w) — with window w=20 and
stride s=10 that is 9 prompts per pass for 100 candidates. Each pass carries the
best w-s candidates of the whole list to the top. The prompt lists the window's
passages as `[1] text` lines and asks for a permutation `[2] > [1] > [3]`; with
`reasoning=True` the model first thinks inside `<think>...</think>`.

How a window is answered (`scoring`, `constrained`):
- `scoring="generate"` (default): the model writes the permutation, which is parsed.
- `scoring="first-token"` (FIRST, Reddy et al. 2024): nothing is generated; one forward
  pass per window reads the probability of each identifier at the first answer position
  (after "[") over the full identifier set, and the window is ordered by it.
- `constrained=True` (with generate): decoding can only write `[B] > [A] > ...` with every
  identifier exactly once (`LLM.permute`: a logits processor on transformers and vLLM, a vLLM
  server's structured outputs one identifier at a time through the OpenAI-compatible backend),
  so every answer is a valid permutation.
The last two use single-token identifiers: digits for windows of up to 9 candidates,
letters A, B, ... beyond, with the `listwise-labels` prompt.

`debias` (small models answer by position): `reverse` asks each window a second time with
its candidates in reverse order, `rotate` once per rotation; first-token combines the
identifiers' probabilities per candidate (mean), generation the ranks (mean rank, Borda);
ties keep the window's input order.

A malformed permutation never stops a run: unreadable, repeated or out-of-range ids
are dropped and the missing ones keep their input order (see `parsing`), and the
problem is recorded in the StageTrace. The reasoning of every window is kept in the
trace (`info["windows"]`) and each document carries the reasoning of the last window
that placed it.
"""

from __future__ import annotations

import string
from typing import Any

from personarag.errors import InputError
from personarag.llm.base import LLM
from personarag.rerankers.llm_base import Algorithm, Ask, LLMReranker, StageLog, by_rank, check_debias, drive, orders, positive_int
from personarag.rerankers.parsing import parse_permutation
from personarag.types import Ranking

SCORINGS = ("generate", "first-token")


def single_token_labels(n: int) -> list[str]:
    """Identifiers for a window of n: 1..9 up to 9 candidates, letters A.. beyond (single tokens in common vocabularies)."""
    if n > len(string.ascii_uppercase):
        raise InputError(f"single-token identifiers go up to {len(string.ascii_uppercase)} candidates (letters), got a window of {n}")
    return [str(i + 1) for i in range(n)] if n <= 9 else list(string.ascii_uppercase[:n])


def window_labels(n: int, labelled: bool) -> list[str]:
    """The identifiers a window of n shows: single tokens for the modes that read them from logits
    or constrain them (first-token, constrained), else 1..n as plain generation writes them."""
    return single_token_labels(n) if labelled else [str(j + 1) for j in range(n)]


def window_starts(n: int, window: int, stride: int) -> list[tuple[int, int]]:
    """The (start, end) windows of one bottom-up pass over n candidates."""
    spans = []
    end = n
    while True:
        start = max(0, end - window)
        spans.append((start, end))
        if start == 0:
            return spans
        end -= stride


class ListwiseReranker(LLMReranker):
    spec_name = "listwise"
    default_prompt = "listwise"
    required_placeholders = ("query", "documents")

    def __init__(
        self,
        llm: LLM | str,
        *,
        window: int = 20,
        stride: int = 10,
        passes: int = 1,
        scoring: str = "generate",
        constrained: bool = False,
        debias: str | None = None,
        **options: Any,
    ) -> None:
        """`scoring`: "generate" or "first-token"; `constrained`: generation limited to permutations;
        `debias`: None, "reverse" or "rotate" (see the module docstring).
        `options`: the keyword options of every LLM reranker (`LLMReranker`)."""
        if scoring not in SCORINGS:
            raise InputError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
        if (scoring == "first-token" or constrained) and options.get("reasoning"):
            raise InputError("scoring='first-token' and constrained=True read the answer's identifiers directly; they cannot follow reasoning=True")
        if scoring == "first-token" and constrained:
            raise InputError("constrained=True applies to scoring='generate' (first-token generates nothing)")
        self.scoring, self.constrained = scoring, bool(constrained)
        self.debias = check_debias(debias)
        self.labelled = scoring == "first-token" or self.constrained
        if self.labelled:
            single_token_labels(window)
            self.default_prompt = "listwise-labels"
        self.window = positive_int("window", window, 2)
        self.stride = positive_int("stride", stride)
        if stride >= window:
            raise InputError(f"stride must be smaller than window (windows must overlap), got window={window}, stride={stride}")
        self.passes = positive_int("passes", passes)
        super().__init__(llm, **options)

    def answer_tokens(self) -> int:
        return 6 * self.window + 16  # about 5 tokens per "[12] > " plus slack

    def _rerank_many(self, rankings: list[Ranking]) -> list[Ranking]:
        logs = [StageLog() for _ in rankings]
        algorithms = [self._sort(r, log) for r, log in zip(rankings, logs)]
        results = drive(self.llm, algorithms, self.generation, logs)
        out = []
        for ranking, log, (order, reasonings) in zip(rankings, logs, results):
            docs = [s.doc for s in ranking.docs]
            out.append(ranking.with_stage(by_rank(docs, order, reasonings), log.trace(self.stage)))
        return out

    def _sort(self, ranking: Ranking, log: StageLog) -> Algorithm[tuple[list[int], dict[str, str]]]:
        docs = [s.doc for s in ranking.docs]
        texts = self._texts(ranking.docs)
        order = list(range(len(docs)))
        reasonings: dict[str, str] = {}
        windows: list[dict[str, Any]] = []
        for pass_number in range(1, self.passes + 1):
            for start, end in window_starts(len(docs), self.window, self.stride):
                ids = order[start:end]
                if len(ids) < 2:
                    continue
                permutation, parsed = yield from self._window(ranking.query.text, [texts[docs[i].id] for i in ids], log, f"pass {pass_number}, window {start + 1}-{end}")
                order[start:end] = [ids[j] for j in permutation]
                if parsed is not None and parsed.reasoning:
                    log.reasoning.append(f"[pass {pass_number}, window {start + 1}-{end}] {parsed.reasoning}")
                    for i in ids:
                        reasonings[docs[i].id] = parsed.reasoning
                windows.append({"pass": pass_number, "start": start, "end": end, "reasoning": parsed.reasoning if parsed else None})
        log.info["windows"] = windows
        return order, reasonings

    def _window(self, query: str, texts: list[str], log: StageLog, where: str) -> Algorithm[tuple[list[int], Any]]:
        """The window's new order (positions into `texts`) and, for generation, the parsed answer."""
        n = len(texts)
        labels = window_labels(n, self.labelled)
        shown = orders(n, self.debias)  # shown[o][j]: the candidate that identifier j shows in order o
        chats = []
        for order in shown:
            block = self.template.render_docs((labels[j], texts[p]) for j, p in enumerate(order))
            extra = {"first_label": labels[0], "second_label": labels[1], "last_label": labels[-1]} if self.labelled else {}
            chats.append(self.template.render(query=query, documents=block, num=n, **extra))
        support = [0.0] * n
        parsed = None
        if self.scoring == "first-token":
            results = yield Ask(tuple(chats), "labels", tuple(labels), prefix="[")
            for order, result in zip(shown, results):
                probs = result.probabilities or (1.0 / n,) * n
                log.answer(where, "first-token " + " ".join(f"[{x}]={p:.3f}" for x, p in zip(labels, probs)))
                for j, p in enumerate(order):
                    support[p] += probs[j] / len(shown)
        else:
            completions = yield (Ask(tuple(chats), "permute", tuple(labels)) if self.constrained else Ask(tuple(chats)))
            for order, completion in zip(shown, completions):
                permutation, parsed = parse_permutation(letters_as_numbers(completion.text, labels), n)
                log.answer(where, completion.text)
                log.problems.extend(f"{where}: {p}" for p in parsed.problems)
                for rank, j in enumerate(permutation):  # Borda: a candidate's support is minus its mean rank
                    support[order[j]] -= rank / len(shown)
        return sorted(range(n), key=lambda p: (-support[p], p)), parsed


def letters_as_numbers(text: str, labels: list[str]) -> str:
    """`[B] > [A]` as `[2] > [1]` for letter identifiers (digits are read as they are)."""
    if labels[0].isdigit():
        return text
    position = {x: str(j + 1) for j, x in enumerate(labels)}
    return "".join(position.get(c, c) if c.isupper() else c for c in text)
