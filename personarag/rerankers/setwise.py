"""Setwise LLM reranking (Zhuang et al. 2024; Rank-R1-style reasoning).

Each prompt shows up to `c` candidates labelled A, B, C, ... and asks for the most
relevant one. Two sorts are driven by these choices, both stopping at `top_k`:

- `heapsort` (default): a (c-1)-ary max-heap; a sift-down compares a node with its
  children in one prompt. Heapify, then `top_k` extractions.
- `bubblesort`: `top_k` bottom-up passes of windows of c candidates overlapping by one;
  each pass carries the best remaining candidate to the next top position.

How a comparison is answered (`choice`):
- `generate` (default): the model writes a label, which is parsed. An answer that names
  no label picks the shown candidate that ranked highest in the input (so failed
  comparisons keep the input order); the problem is recorded in the StageTrace.
- `likelihood`: nothing is generated; the probability of each single-token label (A, B, ...)
  at the answer position is read over the full label set
  (`personarag.llm.labels.score_labels`), and the most probable label wins, so every
  comparison yields a choice (llm-rankers' likelihood setwise).

`debias` (small models pick by position): `reverse` asks each comparison a second time
with the candidates in reverse order, `rotate` asks once per rotation; the answers are
combined per candidate (likelihood: mean probability; generate: votes, ties to the
candidate ranked higher in the input). Each order costs one more prompt.

The top_k come first in the order found; the other candidates follow in their input
order (scores are rank-based: n, n-1, ...). With `reasoning=True` the model thinks inside `<think>...</think>`
before answering; each top_k document carries the reasoning of the choice that
selected it last.
"""

from __future__ import annotations

import string
from typing import Any

from personarag.errors import InputError
from personarag.llm.base import LLM
from personarag.rerankers.llm_base import Algorithm, Ask, LLMReranker, StageLog, by_rank, check_debias, drive, orders, positive_int
from personarag.rerankers.parsing import parse_choice
from personarag.types import Ranking

LABELS = string.ascii_uppercase
METHODS = ("heapsort", "bubblesort")
CHOICES = ("generate", "likelihood")


class SetwiseReranker(LLMReranker):
    spec_name = "setwise"
    default_prompt = "setwise"
    required_placeholders = ("query", "documents")

    def __init__(
        self,
        llm: LLM | str,
        *,
        c: int = 4,
        top_k: int = 10,
        method: str = "heapsort",
        choice: str = "generate",
        debias: str | None = None,
        **options: Any,
    ) -> None:
        """`choice`: "generate" or "likelihood" (see the module docstring); `debias`: None,
        "reverse" or "rotate". `options`: the keyword options of every LLM reranker (`LLMReranker`)."""
        if choice not in CHOICES:
            raise InputError(f"choice must be one of {CHOICES}, got {choice!r}")
        if choice == "likelihood" and options.get("reasoning"):
            raise InputError("choice='likelihood' reads the label at the answer position; it cannot follow reasoning=True")
        self.choice = choice
        self.debias = check_debias(debias)
        self.c = positive_int("c", c, 2)
        if c > len(LABELS):
            raise InputError(f"c must be at most {len(LABELS)} (one letter label each), got {c}")
        self.top_k = positive_int("top_k", top_k)
        if method not in METHODS:
            raise InputError(f"method must be one of {METHODS}, got {method!r}")
        self.method = method
        super().__init__(llm, **options)

    def answer_tokens(self) -> int:
        return 8

    def _rerank_many(self, rankings: list[Ranking]) -> list[Ranking]:
        logs = [StageLog() for _ in rankings]
        sort = self._heapsort if self.method == "heapsort" else self._bubblesort
        algorithms = [sort(r, log) for r, log in zip(rankings, logs)]
        results = drive(self.llm, algorithms, self.generation, logs)
        out = []
        for ranking, log, (top, reasonings) in zip(rankings, logs, results):
            docs = [s.doc for s in ranking.docs]
            chosen = set(top)
            order = list(top) + [i for i in range(len(docs)) if i not in chosen]
            log.info["comparisons"] = len(log.usages)
            out.append(ranking.with_stage(by_rank(docs, order, reasonings), log.trace(self.stage)))
        return out

    def _choose(self, ranking: Ranking, texts: dict[str, str], ids: list[int], log: StageLog, reasonings: dict[str, str]) -> Algorithm[int]:
        """Ask which of the candidates `ids` is most relevant; the answer is a position in `ids`."""
        docs = ranking.docs
        labels = LABELS[: len(ids)]
        shown = orders(len(ids), self.debias)  # shown[o][j]: the position in ids that label j names in order o
        chats = []
        for order in shown:
            block = self.template.render_docs((labels[j], texts[docs[ids[p]].doc.id]) for j, p in enumerate(order))
            chats.append(self.template.render(
                query=ranking.query.text, documents=block, num=len(ids), labels=", ".join(labels), first_label=labels[0]
            ))
        where = "choice among candidates " + ", ".join(str(i + 1) for i in ids)
        support = [0.0] * len(ids)
        if self.choice == "likelihood":
            results = yield Ask(tuple(chats), "labels", tuple(labels))
            for order, result in zip(shown, results):
                probs = result.probabilities or (1.0 / len(ids),) * len(ids)
                log.answer(where, "likelihood " + " ".join(f"{x}={p:.3f}" for x, p in zip(labels, probs)))
                for j, p in enumerate(order):
                    support[p] += probs[j] / len(shown)
        else:
            completions = yield Ask(tuple(chats))
            for order, completion in zip(shown, completions):
                picked, parsed = parse_choice(completion.text, labels)
                log.answer(where, completion.text)
                log.problems.extend(f"choice among {len(ids)}: {p}" for p in parsed.problems)
                if picked is not None:
                    support[order[picked]] += 1.0
                if parsed.reasoning:
                    log.reasoning.append(parsed.reasoning)
                    reasonings[docs[ids[order[picked] if picked is not None else 0]].doc.id] = parsed.reasoning
            if not any(support):
                log.problems.append(f"choice among {len(ids)}: no label read, took the candidate ranked highest in the input")
        # the best supported candidate; ties (and no readable answer) go to the one ranked highest in the input
        return max(range(len(ids)), key=lambda j: (support[j], -ids[j]))

    def _heapsort(self, ranking: Ranking, log: StageLog) -> Algorithm[tuple[list[int], dict[str, str]]]:
        texts = self._texts(ranking.docs)
        n = len(ranking.docs)
        heap = list(range(n))  # heap slots hold indices into ranking.docs
        arity = self.c - 1
        reasonings: dict[str, str] = {}

        def sift(node: int, size: int) -> Algorithm[None]:
            while True:
                children = list(range(arity * node + 1, min(arity * node + arity + 1, size)))
                if not children:
                    return
                slots = [node] + children
                choice = yield from self._choose(ranking, texts, [heap[s] for s in slots], log, reasonings)
                best = slots[choice]
                if best == node:
                    return
                heap[node], heap[best] = heap[best], heap[node]
                node = best

        for node in range((n - 2) // arity, -1, -1):
            yield from sift(node, n)
        top: list[int] = []
        size = n
        while size > 0 and len(top) < self.top_k:
            top.append(heap[0])
            size -= 1
            heap[0] = heap[size]
            if len(top) < self.top_k and size > 1:
                yield from sift(0, size)
        return top, reasonings

    def _bubblesort(self, ranking: Ranking, log: StageLog) -> Algorithm[tuple[list[int], dict[str, str]]]:
        texts = self._texts(ranking.docs)
        n = len(ranking.docs)
        order = list(range(n))
        reasonings: dict[str, str] = {}
        for position in range(min(self.top_k, n - 1)):
            end = n
            while True:
                start = max(position, end - self.c)
                ids = order[start:end]
                choice = yield from self._choose(ranking, texts, ids, log, reasonings)
                # move the chosen candidate to the head of the window; the others keep their order
                order[start:end] = [ids[choice]] + ids[:choice] + ids[choice + 1:]
                if start == position:
                    break
                end = start + 1
        return order[: self.top_k], reasonings
