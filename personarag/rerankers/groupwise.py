"""Groupwise LLM reranking: one prompt scores every document of a group of g.

The candidates are cut, in input order, into groups of `group_size`; each prompt asks
for an absolute relevance score on a fixed 0..k scale for every passage of its group,
one line each (`[1] score: 7`). All groups of all queries of a batch go to the LLM in
one `generate` call.

Merging groups: the prompt defines the same absolute scale for every group, so
scores from different groups are compared directly; the final order sorts all
candidates by score, equal scores keeping their input order. With
`second_pass=m`, the top m candidates after the first pass are regrouped (the best,
the (G+1)-th best, ... go to the first group, so each group mixes strong and weaker
candidates) and scored again; their final score is the mean of both passes and they
stay above the other candidates. A passage without a readable score gets the bottom
of the scale (recorded in the StageTrace), so unreadable groups keep their input order
below judged documents. Each document carries the reasoning of its group.
"""

from __future__ import annotations

from typing import Any

from personarag.llm.base import LLM, Chat
from personarag.rerankers.llm_base import LLMReranker, StageLog, positive_int
from personarag.rerankers.parsing import parse_group_scores
from personarag.types import Ranking, ScoredDoc


class GroupwiseReranker(LLMReranker):
    spec_name = "groupwise"
    default_prompt = "groupwise"
    required_placeholders = ("query", "documents")

    def __init__(self, llm: LLM | str, *, group_size: int = 10, k: int = 10, second_pass: int = 0, **options: Any) -> None:
        """`options`: the keyword options of every LLM reranker (`LLMReranker`)."""
        self.group_size = positive_int("group_size", group_size, 1)
        self.k = positive_int("k", k)
        self.second_pass = positive_int("second_pass", second_pass, 0)
        super().__init__(llm, **options)

    def answer_tokens(self) -> int:
        return 8 * self.group_size + 16

    def _score_groups(self, rankings: list[Ranking], groups: list[list[list[int]]], logs: list[StageLog], label: str) -> list[dict[int, tuple[float, str | None]]]:
        """Score every group (lists of candidate indices) of every query in one generate call."""
        prompts: list[Chat] = []
        owners: list[tuple[int, list[int]]] = []
        for q, ranking in enumerate(rankings):
            texts = self._texts(ranking.docs)
            for group in groups[q]:
                block = self.template.render_docs((str(j + 1), texts[ranking.docs[i].doc.id]) for j, i in enumerate(group))
                prompts.append(self.template.render(query=ranking.query.text, documents=block, num=len(group), k=self.k))
                owners.append((q, group))
        scores: list[dict[int, tuple[float, str | None]]] = [{} for _ in rankings]
        completions = self.llm.generate(prompts, self.generation)
        for (q, group), completion in zip(owners, completions):
            logs[q].add(completion.usage)
            values, parsed = parse_group_scores(completion.text, len(group), 0, self.k)
            where = f"{label} group of candidates {group[0] + 1}..{group[-1] + 1}" if label == "first pass" else f"{label} group"
            logs[q].answer(where, completion.text)
            logs[q].problems.extend(f"{where}: {p}" for p in parsed.problems)
            if parsed.reasoning:
                logs[q].reasoning.append(parsed.reasoning)
            for i, value in zip(group, values):
                scores[q][i] = (0.0 if value is None else value, parsed.reasoning)
        return scores

    def _rerank_many(self, rankings: list[Ranking]) -> list[Ranking]:
        logs = [StageLog() for _ in rankings]
        g = self.group_size
        first_groups = [[list(range(s, min(s + g, len(r.docs)))) for s in range(0, len(r.docs), g)] for r in rankings]
        first = self._score_groups(rankings, first_groups, logs, "first pass")
        orders = [sorted(range(len(r.docs)), key=lambda i, q=q: -first[q][i][0]) for q, r in enumerate(rankings)]
        final = [dict(scores) for scores in first]
        heads = [order[: self.second_pass] if self.second_pass > 1 else [] for order in orders]
        if any(heads):
            n_groups = [max(1, -(-len(h) // g)) for h in heads]
            second_groups = [[h[j::n] for j in range(n)] if h else [] for h, n in zip(heads, n_groups)]
            second = self._score_groups(rankings, second_groups, logs, "second pass")
            for q, head in enumerate(heads):
                for i in head:
                    value, reasoning = second[q][i]
                    final[q][i] = ((first[q][i][0] + value) / 2, reasoning or first[q][i][1])
                head_order = sorted(head, key=lambda i, q=q: -final[q][i][0])
                orders[q] = head_order + orders[q][len(head):]
        out = []
        for q, ranking in enumerate(rankings):
            docs = [ScoredDoc(ranking.docs[i].doc, final[q][i][0], final[q][i][1]) for i in orders[q]]
            if heads[q]:
                # keep the re-scored head above the rest even where its mean fell below a first-pass score
                floor = min(d.score for d in docs[: len(heads[q])])
                docs = docs[: len(heads[q])] + [ScoredDoc(d.doc, min(d.score, floor), d.reasoning) for d in docs[len(heads[q]):]]
            logs[q].info["groups"] = len(first_groups[q]) + (len(second_groups[q]) if heads[q] else 0)
            out.append(ranking.with_stage(docs, logs[q].trace(self.stage)))
        return out
