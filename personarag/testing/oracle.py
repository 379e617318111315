"""An LLM that answers reranking prompts from relevance judgements (tests and benchmarks only).

It reads the prompts the shipped reranker templates produce: the query from the line
`Query: ...`, the candidates from lines `[LABEL] text` (or `Document: text` for
pointwise prompts). Candidates are recognised by text — the first `key_chars`
characters of `personarag.prompts.doc_text(doc)` — which only a test oracle
may do; production code keys everything by id. So per-document budgets must keep at
least `key_chars` characters (about 20 tokens).

It answers in the format the prompt asks for:
- letter labels (A, B, ...): the label of the most relevant candidate (setwise);
- number labels and a `[] > []` instruction: the permutation `[2] > [1] > ...` (listwise);
- number labels otherwise: lines `[i] score: s` on the prompt's 0..k scale (groupwise);
- one `Document:`: `Score: s` on 0..k (pointwise reasoning);
and for `score()`: yes/no log-probabilities (the first answer is "yes"), a peaked
distribution over the digits 0..k, or, when the answers are the prompt's candidate labels
(optionally after a common prefix such as "["), a distribution over the labels that puts
more mass on more relevant candidates (setwise likelihood, listwise first-token);
`permute()` answers the listwise permutation, as a constrained decoder would. A prompt that mentions `<think>` gets a short
reasoning inside `<think>...</think>` first. Relevance maps to the 0..k scale as
round(k * rel / max_rel), max_rel being the largest grade in the qrels.

`error_rate=p` makes it err with probability p: per prompt, two random positions of
the permutation are swapped, a random other label is chosen, or the yes/no judgement
is flipped; per document, a group score or digit is replaced by a random value. The
randomness comes from a hash of (seed, prompt, sample), so answers are reproducible
and independent of batching.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Iterable, Mapping
from typing import Any

from personarag.errors import InputError
from personarag.llm.base import LLM, AnswerScores, Chat, Completion, GenerationConfig
from personarag.prompts import doc_text
from personarag.types import Document, Query, Usage

_QUERY_LINE = re.compile(r"^(?:Search )?Query: (.*)$", re.MULTILINE)
_LABELLED = re.compile(r"^\[([A-Za-z0-9]+)\] (.*)$", re.MULTILINE)
_DOCUMENT = re.compile(r"^Document: (.*)$", re.MULTILINE)
_SCALE = re.compile(r"from 0 to (\d+)")


def _normal(text: str) -> str:
    return " ".join(text.split())


class OracleLLM(LLM):
    def __init__(
        self,
        corpus: Iterable[Document] | Mapping[str, Document],
        queries: Iterable[Query],
        qrels: Mapping[str, Mapping[str, int]],
        *,
        error_rate: float = 0.0,
        seed: int = 0,
        key_chars: int = 80,
    ) -> None:
        if not 0.0 <= error_rate <= 1.0:
            raise InputError(f"error_rate must be in [0, 1], got {error_rate!r}")
        docs = corpus.values() if isinstance(corpus, Mapping) else corpus
        self.error_rate = error_rate
        self.seed = seed
        self.key_chars = key_chars
        self.cache_dir = None
        self._docs: dict[str, list[str]] = {}
        for doc in docs:
            self._docs.setdefault(doc_text(doc)[:key_chars], []).append(doc.id)
        self._queries: dict[str, str] = {}
        for query in queries:
            self._queries.setdefault(_normal(query.text), query.id)
        self._qrels = {qid: dict(judged) for qid, judged in qrels.items()}
        grades = [g for judged in self._qrels.values() for g in judged.values()]
        self.max_rel = max([g for g in grades if g > 0], default=1)
        self.unknown_docs = 0

    @property
    def model_name(self) -> str:
        return f"oracle(p={self.error_rate}, seed={self.seed})"

    # --- reading prompts -------------------------------------------------------------
    def _query_id(self, text: str) -> str:
        for match in _QUERY_LINE.finditer(text):
            line = _normal(match.group(1))
            for candidate in (line, line.rstrip(".")):
                if candidate in self._queries:
                    return self._queries[candidate]
        raise InputError(f"oracle: no known query on a 'Query:' line of the prompt {text[:200]!r}")

    def _relevance(self, qid: str, text: str) -> int:
        ids = self._docs.get(_normal(text)[: self.key_chars])
        if ids is None:
            self.unknown_docs += 1
            return 0
        judged = self._qrels.get(qid, {})
        return max(judged.get(i, 0) for i in ids)

    def _rng(self, text: str, sample: int) -> random.Random:
        digest = hashlib.sha256(f"{self.seed}\0{sample}\0{text}".encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))

    def _grade(self, rel: int, k: int) -> int:
        return round(k * min(rel, self.max_rel) / self.max_rel) if rel > 0 else 0

    # --- answering -------------------------------------------------------------------
    def _answer(self, text: str, sample: int) -> str:
        qid = self._query_id(text)
        rng = self._rng(text, sample)
        p = self.error_rate
        labelled = _LABELLED.findall(text)
        think = "<think>The oracle reads the relevance judgements.</think>\n" if "<think>" in text else ""
        scale = _SCALE.search(text)
        k = int(scale.group(1)) if scale else 10
        if labelled:
            labels = [label for label, _ in labelled]
            rels = [self._relevance(qid, body) for _, body in labelled]
            if labels[0].isalpha():  # setwise: pick one
                best = max(range(len(labels)), key=lambda i: (rels[i], -i))
                if len(labels) > 1 and rng.random() < p:
                    best = rng.choice([i for i in range(len(labels)) if i != best])
                return f"{think}{labels[best]}"
            if "] > [" in text:  # listwise: permutation
                order = sorted(range(len(labels)), key=lambda i: -rels[i])
                if len(order) > 1 and rng.random() < p:
                    a, b = rng.sample(range(len(order)), 2)
                    order[a], order[b] = order[b], order[a]
                return think + " > ".join(f"[{labels[i]}]" for i in order)
            lines = []
            for label, rel in zip(labels, rels):
                value = rng.randint(0, k) if rng.random() < p else self._grade(rel, k)
                lines.append(f"[{label}] score: {value}")
            return think + "\n".join(lines)
        document = _DOCUMENT.search(text)
        if document is None:
            raise InputError(f"oracle: the prompt has neither [LABEL] candidate lines nor a 'Document:' line: {text[:200]!r}")
        rel = self._relevance(qid, document.group(1))
        value = rng.randint(0, k) if rng.random() < p else self._grade(rel, k)
        return f"{think}Score: {value}"

    def _generate(self, chats: list[Chat], config: GenerationConfig) -> list[Completion]:
        out = []
        for chat in chats:
            text = "\n".join(m.content for m in chat)
            texts = tuple(self._answer(text, sample) for sample in range(config.n))
            usage = Usage(calls=1, prompt_tokens=self.count_tokens(text), completion_tokens=sum(self.count_tokens(t) for t in texts))
            out.append(Completion(texts, usage))
        return out

    def _label_scores(self, text: str, answers: list[str]) -> dict[str, float] | None:
        """log-probabilities of candidate labels (answers = prefix + label), or None when the answers are no labels of the prompt."""
        labelled = dict(_LABELLED.findall(text))
        prefix = answers[0][:-1] if len(answers[0]) > 1 else ""
        labels = [a[len(prefix):] if a.startswith(prefix) else None for a in answers]
        if not labelled or any(x is None or x not in labelled for x in labels):
            return None
        qid = self._query_id(text)
        rels = [self._relevance(qid, labelled[x]) for x in labels]
        if len(rels) > 1 and self._rng(text, 0).random() < self.error_rate:
            a, b = self._rng(text, 1).sample(range(len(rels)), 2)
            rels[a], rels[b] = rels[b], rels[a]
        weights = [math.exp(2.0 * r) for r in rels]
        total = sum(weights)
        return {a: math.log(w / total) for a, w in zip(answers, weights)}

    def _permute(self, chats: list[Chat], labels: list[str], config: GenerationConfig) -> list[Completion]:
        out = []
        for chat in chats:
            text = "\n".join(m.content for m in chat)
            scores = self._label_scores(text, labels)
            if scores is None:
                raise InputError(f"oracle: the labels {labels} are not the candidate labels of the prompt {text[:200]!r}")
            order = sorted(range(len(labels)), key=lambda j: -scores[labels[j]])  # stable: ties keep the shown order
            answer = " > ".join(f"[{labels[j]}]" for j in order)
            out.append(Completion((answer,), Usage(calls=1, prompt_tokens=self.count_tokens(text), completion_tokens=self.count_tokens(answer))))
        return out

    def _score(self, chats: list[Chat], answers: list[str]) -> list[AnswerScores]:
        labelled = [self._label_scores("\n".join(m.content for m in chat), answers) for chat in chats]
        if all(x is not None for x in labelled):
            return [AnswerScores(x, Usage(calls=1, prompt_tokens=self.count_tokens("\n".join(m.content for m in chat)))) for x, chat in zip(labelled, chats)]
        digits = all(a.isdigit() for a in answers)
        positive = [a.lower() == answers[0].lower() for a in answers]  # yes/no in any casing: the first is "yes"
        if not digits and (all(positive) or len({a.lower() for a in answers}) != 2):
            raise InputError(f"oracle scores yes/no answers (case variants allowed) or digit answers, got {answers}")
        out = []
        for chat in chats:
            text = "\n".join(m.content for m in chat)
            qid = self._query_id(text)
            document = _DOCUMENT.search(text)
            if document is None:
                raise InputError(f"oracle: no 'Document:' line in the prompt {text[:200]!r}")
            rel = self._relevance(qid, document.group(1))
            rng = self._rng(text, 0)
            if digits:
                k = max(int(a) for a in answers)
                peak = rng.randint(0, k) if rng.random() < self.error_rate else self._grade(rel, k)
                probs = [0.9 if int(a) == peak else 0.1 / max(1, len(answers) - 1) for a in answers]
            else:
                p_yes = 0.5 + 0.45 * min(rel, self.max_rel) / self.max_rel if rel > 0 else 0.05
                if rng.random() < self.error_rate:
                    p_yes = 1.0 - p_yes
                n_yes = sum(positive)
                probs = [p_yes / n_yes if yes else (1.0 - p_yes) / (len(answers) - n_yes) for yes in positive]
            logprobs = {a: math.log(q) for a, q in zip(answers, probs)}
            out.append(AnswerScores(logprobs, Usage(calls=1, prompt_tokens=self.count_tokens(text))))
        return out

    def extra_key(self) -> dict[str, Any]:
        return {"error_rate": self.error_rate, "seed": self.seed}
