"""Pointwise LLM reranking: every (query, document) pair judged on its own.

Modes:
- `yesno`: relevance = P(yes) / (P(yes) + P(no)), read by `personarag.llm.labels.score_labels`
  at the answer position (no generation: the answer is restricted to those tokens, so
  every document gets a score; chat templates with a thinking switch render with it off);
  with `case_variants=True` (default) "yes"/"Yes" and "no"/"No" are scored and summed,
  since models differ in which casing they put their mass on (SmolLM2 puts ~20x more on
  "Yes"/"No" than on "yes"/"no");
- `fine`: the digits 0..k scored the same way, normalised over the k+1 answers;
  relevance = sum_i i * p_i, the expected score (ERank-style), k <= 9 so each answer
  is one digit;
- `reason`: the model thinks inside `<think>...</think>` then answers "Score: N" on
  0..k (Rank1 / Retro*-style); `samples=n` draws n answers (temperature > 0) and
  averages the scores it could read. The reasoning is kept on each ScoredDoc.

All prompts of a batch of queries go to the LLM in one `score` / `generate` call.
Sorting is stable: equal scores keep the input order. A judgement that cannot be
read (no number, both answers at probability 0) scores the bottom of the scale
and is recorded in the StageTrace, so such documents sink below judged ones in
their input order.
"""

from __future__ import annotations

from typing import Any

from personarag.errors import InputError
from personarag.llm.base import LLM, Chat
from personarag.llm.labels import score_labels
from personarag.rerankers.llm_base import LLMReranker, StageLog, positive_int
from personarag.rerankers.parsing import parse_score
from personarag.types import Ranking, ScoredDoc

MODES = ("yesno", "fine", "reason")


class PointwiseReranker(LLMReranker):
    spec_name = "pointwise"
    required_placeholders = ("query", "text")

    def __init__(
        self,
        llm: LLM | str,
        *,
        mode: str = "yesno",
        k: int = 3,
        samples: int = 1,
        case_variants: bool = True,
        **options: Any,
    ) -> None:
        """`options`: the keyword options of every LLM reranker (`LLMReranker`), here with
        max_doc_tokens 512, max_new_tokens 1024 and temperature 0.7 when samples > 1 by default;
        `reasoning` does not apply (use mode='reason')."""
        if mode not in MODES:
            raise InputError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.k = positive_int("k", k)
        if mode == "fine" and k > 9:
            raise InputError(f"fine mode scores single digits, so k must be at most 9, got {k}")
        self.samples = positive_int("samples", samples)
        if samples > 1 and mode != "reason":
            raise InputError(f"samples={samples} applies to mode='reason' only (the other modes read exact probabilities)")
        if options.get("reasoning"):
            raise InputError("a pointwise reranker reasons with mode='reason', not reasoning=True")
        self.case_variants = bool(case_variants)
        self.default_prompt = f"pointwise-{mode}"
        options.setdefault("max_doc_tokens", 512)
        options.setdefault("max_new_tokens", 1024)
        if options.get("temperature") is None:
            options["temperature"] = 0.7 if samples > 1 else 0.0
        super().__init__(llm, **options)

    def n_samples(self) -> int:
        return self.samples

    @property
    def answers(self) -> list[str]:
        if self.mode == "fine":
            return [str(i) for i in range(self.k + 1)]
        answers = list(self.template.answers or ("yes", "no"))
        if len(answers) != 2:
            raise InputError(f"a yes/no template needs exactly two answers (positive first), got {answers}")
        return answers

    def _rerank_many(self, rankings: list[Ranking]) -> list[Ranking]:
        logs = [StageLog() for _ in rankings]
        prompts: list[Chat] = []
        owners: list[tuple[int, int]] = []
        for q, ranking in enumerate(rankings):
            texts = self._texts(ranking.docs)
            for d, scored in enumerate(ranking.docs):
                prompts.append(self.template.render(query=ranking.query.text, text=texts[scored.doc.id], k=self.k))
                owners.append((q, d))
        if self.mode == "reason":
            judged = self._reason(prompts, owners, logs)
        else:
            judged = self._score(prompts, owners, logs)
        out = []
        for q, ranking in enumerate(rankings):
            scored_docs = [ScoredDoc(s.doc, *judged[(q, d)]) for d, s in enumerate(ranking.docs)]
            order = sorted(range(len(scored_docs)), key=lambda d: -scored_docs[d].score)  # stable: ties keep input order
            logs[q].info["mode"] = self.mode
            out.append(ranking.with_stage([scored_docs[d] for d in order], logs[q].trace(self.stage)))
        return out

    def _scored_answers(self) -> tuple[list[str], list[float]]:
        """The answer strings to score and the value each stands for (digit i -> i; yes -> 1, no -> 0)."""
        if self.mode == "fine":
            answers = self.answers
            return answers, [float(a) for a in answers]
        positive, negative = self.answers
        out: dict[str, float] = {positive: 1.0, negative: 0.0}
        if self.case_variants:
            for form in (str.lower, str.capitalize):
                out.setdefault(form(positive), 1.0)
                out.setdefault(form(negative), 0.0)
        return list(out), list(out.values())

    def _score(self, prompts: list[Chat], owners: list[tuple[int, int]], logs: list[StageLog]) -> dict[tuple[int, int], tuple[float, None]]:
        answers, values = self._scored_answers()
        results = score_labels(self.llm, prompts, answers)
        judged: dict[tuple[int, int], tuple[float, None]] = {}
        for (q, d), result in zip(owners, results):
            logs[q].add(result.usage)
            if result.invalid:  # a backend fault: +inf or nan is no log-probability, and would silently score 0
                logs[q].problems.append(f"document {d + 1}: invalid log-probability from the LLM ({', '.join(result.invalid)}); scored 0")
                judged[(q, d)] = (0.0, None)
                continue
            probs = result.probabilities
            if probs is None:
                logs[q].problems.append(f"document {d + 1}: every answer has probability 0; scored 0")
                judged[(q, d)] = (0.0, None)
            else:  # P(yes) for yes/no, the expected digit for 0..k
                judged[(q, d)] = (sum(v * p for v, p in zip(values, probs)), None)
        return judged

    def _reason(self, prompts: list[Chat], owners: list[tuple[int, int]], logs: list[StageLog]) -> dict[tuple[int, int], tuple[float, str | None]]:
        completions = self.llm.generate(prompts, self.generation)
        judged: dict[tuple[int, int], tuple[float, str | None]] = {}
        for (q, d), completion in zip(owners, completions):
            logs[q].add(completion.usage)
            scores, reasonings = [], []
            for sample, text in enumerate(completion.texts):
                score, parsed = parse_score(text, 0, self.k)
                where = f"document {d + 1}" + (f", sample {sample + 1}" if self.samples > 1 else "")
                logs[q].problems.extend(f"{where}: {p}" for p in parsed.problems)
                if score is not None:
                    scores.append(score)
                if parsed.reasoning:
                    reasonings.append(parsed.reasoning)
            if not scores:
                logs[q].problems.append(f"document {d + 1}: no readable score; scored 0")
            reasoning = "\n---\n".join(reasonings) if reasonings else None
            judged[(q, d)] = (sum(scores) / len(scores) if scores else 0.0, reasoning)
        return judged
