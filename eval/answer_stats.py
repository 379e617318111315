"""What the LLM rerankers of a comparison suite answered: one table row per run folder.

Reads each row's `reasoning.jsonl` (the raw answers `personarag compare` keeps: listwise windows,
setwise choices, groupwise groups) and reads them back with the rerankers' own parsers, so an
answer counts as unreadable exactly when the reranker fell back on it. Columns:

- answers: listwise windows, setwise comparisons or groupwise groups answered (every prompt order
  of a debiased row counts);
- unreadable: generated answers the parser could not read in full (the reranker fell back to the
  order it was given for what was missing); the likelihood and first-token modes cannot fail;
- as shown: answers that keep the order the candidates were shown in: a listwise permutation equal
  to the window's order, a setwise pick of the first label, a groupwise group with one score for
  every passage (the reranker then keeps the group's order);
- first pick: the most common identifier ranked first (listwise), chosen (setwise), or the most
  common score (groupwise), with its share of the readable answers.

    .venv/bin/python eval/answer_stats.py eval/results/dl19_43q/*/           # folders without answers are skipped
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from personarag.rerankers.listwise import letters_as_numbers, window_labels
from personarag.rerankers.parsing import parse_choice, parse_group_scores, parse_permutation
from personarag.rerankers.setwise import LABELS

_PROBABILITY = re.compile(r"\[?([A-Za-z0-9]+)\]?=([0-9.]+)")
_WINDOW = re.compile(r"window (\d+)-(\d+)")
_CANDIDATES = re.compile(r"candidates ([\d, ]+)$")
_GROUP = re.compile(r"candidates (\d+)\.\.(\d+)")


@dataclass
class AnswerStats:
    mode: str = ""
    answers: int = 0
    unreadable: int = 0
    as_shown: int = 0
    picks: Counter = field(default_factory=Counter)

    def row(self, name: str) -> str:
        readable = self.answers - self.unreadable
        if self.picks:
            pick, count = self.picks.most_common(1)[0]
            first = f"{pick} ({count / max(readable, 1):.0%})"
        else:
            first = "-"
        return f"| {name} | {self.mode} | {self.answers} | {self.unreadable} | {self.as_shown} ({self.as_shown / max(self.answers, 1):.0%}) | {first} |"


def _span(where: str, pattern: re.Pattern, default: int) -> int:
    """How many candidates a `window a-b` / `candidates a..b` answer covers (default: not named)."""
    match = pattern.search(where)
    return int(match.group(2)) - int(match.group(1)) + 1 if match else default


def _listed(where: str, default: int) -> int:
    """How many candidates a setwise `choice among candidates 3, 7, 8` answer chose among."""
    match = _CANDIDATES.search(where)
    return len(match.group(1).split(",")) if match else default


def _read_probabilities(stats: AnswerStats, answer: str) -> None:
    probabilities = {label: float(p) for label, p in _PROBABILITY.findall(answer)}
    best = max(probabilities, key=probabilities.get)
    stats.picks[best] += 1
    stats.as_shown += best == next(iter(probabilities))


def _read_listwise(stats: AnswerStats, answer: str, n: int, constrained: bool) -> None:
    labels = window_labels(n, labelled=constrained)
    permutation, parsed = parse_permutation(letters_as_numbers(answer, labels), n)
    if parsed.problems:
        stats.unreadable += 1
        return
    stats.picks[labels[permutation[0]]] += 1
    stats.as_shown += permutation == list(range(n))


def _read_setwise(stats: AnswerStats, answer: str, n: int) -> None:
    picked, _ = parse_choice(answer, LABELS[:n])
    if picked is None:
        stats.unreadable += 1
        return
    stats.picks[LABELS[picked]] += 1
    stats.as_shown += picked == 0


def _read_groupwise(stats: AnswerStats, answer: str, n: int, top: float) -> None:
    scores, parsed = parse_group_scores(answer, n, 0, top)
    if parsed.problems:
        stats.unreadable += 1
        return
    stats.picks[f"{Counter(scores).most_common(1)[0][0]:g}"] += 1
    stats.as_shown += len(set(scores)) == 1


def answer_stats(folder: Path) -> AnswerStats | None:
    path = folder / "reasoning.jsonl"
    if not path.exists():
        return None
    params = json.loads((folder / "config.json").read_text())["pipeline"]["stages"][-1].get("params", {})
    stats = AnswerStats()
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            if "answer" not in row:
                continue
            stage, answer, where = row["stage"], row["answer"] or "", row["where"]
            stats.answers += 1
            if answer.startswith(("likelihood ", "first-token ")):
                stats.mode = f"{stage} {answer.split()[0]}"
                _read_probabilities(stats, answer)
            elif stage == "listwise":
                constrained = bool(params.get("constrained"))
                stats.mode = "listwise " + ("constrained" if constrained else "generate")
                _read_listwise(stats, answer, _span(where, _WINDOW, params.get("window", 20)), constrained)
            elif stage == "setwise":
                stats.mode = "setwise generate"
                _read_setwise(stats, answer, _listed(where, params.get("c", 4)))
            elif stage == "groupwise":
                stats.mode = "groupwise"
                _read_groupwise(stats, answer, _span(where, _GROUP, params.get("group_size", 10)), params.get("k", 10))
    return stats if stats.answers else None


def main(folders: list[str]) -> None:
    print("| row | mode | answers | unreadable | as shown | first pick |")
    print("|---|---|---|---|---|---|")
    for folder in map(Path, folders):
        stats = answer_stats(folder)
        if stats is not None:
            print(stats.row(f"{folder.parent.name}/{folder.name}"))


if __name__ == "__main__":
    main(sys.argv[1:])
