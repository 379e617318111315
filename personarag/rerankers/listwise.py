"""Listwise LLM reranking with a sliding window (RankGPT, RankZephyr; ReasonRank-style reasoning).

The window moves from the bottom of the candidate list to the top: it reorders
candidates [n-w, n), then [n-w-s, n-s), ..., down to [0, w) — with window w=20 and
stride s=10 that is 9 prompts per pass for 100 candidates. Each pass carries the
best w-s candidates of the whole list to the top. The prompt lists the window's
passages as `[1] text` lines and asks for a permutation `[2] > [1] > [3]`; with
`reasoning=True` the model first thinks inside `<think>...</think>`.

A malformed permutation never stops a run: unreadable, repeated or out-of-range ids
are dropped and the missing ones keep their input order (see `parsing`), and the
problem is recorded in the StageTrace. The reasoning of every window is kept in the
trace (`info["windows"]`) and each document carries the reasoning of the last window
that placed it.
"""

from __future__ import annotations

from typing import Any

from personarag.errors import InputError
from personarag.llm.base import LLM
from personarag.rerankers.llm_base import Algorithm, LLMReranker, StageLog, by_rank, drive, positive_int
from personarag.rerankers.parsing import parse_permutation
from personarag.types import Ranking


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

    def __init__(self, llm: LLM | str, *, window: int = 20, stride: int = 10, passes: int = 1, **options: Any) -> None:
        """`options`: the keyword options of every LLM reranker (`LLMReranker`)."""
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
                block = self.template.render_docs((str(j + 1), texts[docs[i].id]) for j, i in enumerate(ids))
                completion = yield self.template.render(query=ranking.query.text, documents=block, num=len(ids))
                permutation, parsed = parse_permutation(completion.text, len(ids))
                where = f"pass {pass_number}, window {start + 1}-{end}"
                log.answer(where, completion.text)
                log.problems.extend(f"{where}: {p}" for p in parsed.problems)
                order[start:end] = [ids[j] for j in permutation]
                if parsed.reasoning:
                    log.reasoning.append(f"[{where}] {parsed.reasoning}")
                    for i in ids:
                        reasonings[docs[i].id] = parsed.reasoning
                windows.append({"pass": pass_number, "start": start, "end": end, "reasoning": parsed.reasoning})
        log.info["windows"] = windows
        return order, reasonings
