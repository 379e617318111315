"""Tolerant parsing of LLM reranker answers.

Every parser returns what it could read plus a list of problems (plain sentences that
go into the StageTrace); none raises on malformed text. The fallbacks, shared by all
rerankers:

- reasoning: `<think>R</think>A` gives reasoning R and answer A; a closing tag without
  an opening one (chat templates that open `<think>` themselves) is accepted; an
  unclosed `<think>` means the model ran out of tokens while thinking: the text is
  kept as reasoning and the answer is empty (a problem).
- permutations: ids outside 1..n (numbers too long to be ids among them) and repeats
  are dropped, missing ids are appended in their input order, so the input order is
  kept for the part the model did not rank.
- choices: an answer that names none of the labels gives None (a problem); the setwise
  reranker then takes the candidate ranked highest in its input.
- scores: values outside the scale are clipped to it (recorded); a document without a
  readable score gets None and the reranker places it by its fallback rule.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

_THINK_OPEN = re.compile(r"<think>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)
_BRACKET_ID = re.compile(r"\[\s*(\d+)\s*\]")
_BARE_ID = re.compile(r"(?<![\w.])(\d+)(?![\w.])")
_NUMBER = re.compile(r"(?<![\w.])(-?\d+(?:\.\d+)?)(?![\w])")
_MAX_ID_DIGITS = 9  # no candidate list is that long; int() would refuse more than 4,300 digits


def _identifier(digits: str) -> int | str:
    """An identifier read from the answer: an int, or (too long to be one) its shortened text,
    which every caller reports as out of range."""
    if len(digits.lstrip("0")) > _MAX_ID_DIGITS:
        return f"{digits[:6]}...({len(digits)} digits)"
    return int(digits)


@dataclass
class Parsed:
    """An answer split from its reasoning, with the problems met so far."""

    reasoning: str | None
    answer: str
    problems: list[str] = field(default_factory=list)


def split_reasoning(text: str | None) -> Parsed:
    if not text or not text.strip():
        return Parsed(None, "", ["empty answer"])
    closes = list(_THINK_CLOSE.finditer(text))
    if closes:
        last = closes[-1]
        head = text[: last.start()]
        opened = _THINK_OPEN.search(head)
        reasoning = head[opened.end():] if opened else head
        reasoning = _THINK_CLOSE.sub("", _THINK_OPEN.sub("", reasoning)).strip()
        answer = text[last.end():].strip()
        problems = [] if answer else ["nothing after </think>"]
        return Parsed(reasoning or None, answer, problems)
    opened = _THINK_OPEN.search(text)
    if opened:
        reasoning = text[opened.end():].strip()
        return Parsed(reasoning or None, "", ["unclosed <think> (the model stopped while reasoning)"])
    return Parsed(None, text.strip())


def parse_permutation(text: str | None, n: int) -> tuple[list[int], Parsed]:
    """0-based permutation of range(n) read from `[2] > [1] > [3]` (or `2 > 1 > 3`), repaired."""
    parsed = split_reasoning(text)
    answer = parsed.answer
    raw = [_identifier(m) for m in _BRACKET_ID.findall(answer)]
    if not raw and answer:
        raw = [_identifier(m) for m in _BARE_ID.findall(answer)]
    order: list[int] = []
    seen: set[int] = set()
    out_of_range: list[int | str] = []
    repeats: list[int] = []
    for number in raw:
        if isinstance(number, str) or not 1 <= number <= n:
            out_of_range.append(number)
        elif number - 1 in seen:
            repeats.append(number)
        else:
            seen.add(number - 1)
            order.append(number - 1)
    missing = [i for i in range(n) if i not in seen]
    if answer and not raw:
        parsed.problems.append(f"no identifiers in the answer {answer[:80]!r}")
    if out_of_range:
        parsed.problems.append(f"identifiers outside 1..{n} ignored: {out_of_range[:10]}")
    if repeats:
        parsed.problems.append(f"repeated identifiers ignored: {repeats[:10]}")
    if missing and raw:
        parsed.problems.append(f"{len(missing)} of {n} identifiers missing, kept in input order: {[m + 1 for m in missing[:10]]}")
    return order + missing, parsed


def parse_choice(text: str | None, labels: Sequence[str]) -> tuple[int | None, Parsed]:
    """Index into `labels` of the chosen label, or None (a problem) when no label is named."""
    parsed = split_reasoning(text)
    answer = parsed.answer
    index = {label.upper(): i for i, label in enumerate(labels)}
    if not answer:
        return None, parsed
    stripped = re.sub(r"[\s\[\]().:*\"']", "", answer).upper()
    if stripped in index:
        return index[stripped], parsed
    patterns = (
        r"\[\s*([A-Za-z0-9]+)\s*\]",
        r"(?:passage|document|answer|label)\s*(?:is)?\s*:?\s*\**\s*\(?([A-Za-z0-9]+)\b",
        r"(?<![\w'])([A-Z])(?![\w'])",
    )
    for pattern in patterns:
        for match in re.finditer(pattern, answer, flags=re.IGNORECASE if pattern != patterns[-1] else 0):
            found = match.group(1).upper()
            if found in index:
                return index[found], parsed
    parsed.problems.append(f"no label of {list(labels)} in the answer {answer[:80]!r}")
    return None, parsed


def clip_score(value: float, low: float, high: float, problems: list[str], where: str = "") -> float:
    if value < low or value > high:
        clipped = min(max(value, low), high)
        problems.append(f"score {value:g}{where} outside {low:g}..{high:g}, clipped to {clipped:g}")
        return clipped
    return value


def parse_score(text: str | None, low: float, high: float) -> tuple[float | None, Parsed]:
    """One relevance score: the number after `Score:` (else the first number), or yes/no as high/low."""
    parsed = split_reasoning(text)
    answer = parsed.answer
    if not answer:
        return None, parsed
    labelled = re.search(r"(?:score|relevance|rating)\s*(?:is)?\s*[:=]?\s*\**\s*(-?\d+(?:\.\d+)?)", answer, re.IGNORECASE)
    number = labelled or _NUMBER.search(answer)
    if number:
        return clip_score(float(number.group(1)), low, high, parsed.problems), parsed
    words = re.findall(r"[a-z]+", answer.lower())
    if words and words[0] in ("yes", "true", "relevant"):
        return float(high), parsed
    if words and words[0] in ("no", "false", "irrelevant"):
        return float(low), parsed
    parsed.problems.append(f"no score in the answer {answer[:80]!r}")
    return None, parsed


def parse_group_scores(text: str | None, n: int, low: float, high: float) -> tuple[list[float | None], Parsed]:
    """Scores of passages 1..n from lines like `[3] score: 7` (also `[3]: 7`, `3: 7`); missing -> None."""
    parsed = split_reasoning(text)
    scores: list[float | None] = [None] * n
    if not parsed.answer:
        return scores, parsed
    out_of_range: list[int | str] = []
    repeats: list[int] = []
    line_pattern = re.compile(
        r"^\W*?(?:passage\s*)?\[?\s*(\d+)\s*\]?\s*(?:\(|:|-|=|\.|,)?\s*(?:score|relevance|rating)?\s*[:=]?\s*\**\s*(-?\d+(?:\.\d+)?)",
        re.IGNORECASE,
    )
    for line in parsed.answer.splitlines():
        matches = list(re.finditer(r"\[\s*(\d+)\s*\][^\[\d\-]*?(-?\d+(?:\.\d+)?)", line))
        pairs = [(m.group(1), m.group(2)) for m in matches]
        if not pairs:
            single = line_pattern.match(line)
            pairs = [(single.group(1), single.group(2))] if single else []
        for ident, value in pairs:
            number = _identifier(ident)
            if isinstance(number, str) or not 1 <= number <= n:
                out_of_range.append(number)
                continue
            if scores[number - 1] is not None:
                repeats.append(number)
                continue
            scores[number - 1] = clip_score(float(value), low, high, parsed.problems, f" of [{number}]")
    if out_of_range:
        parsed.problems.append(f"identifiers outside 1..{n} ignored: {out_of_range[:10]}")
    if repeats:
        parsed.problems.append(f"repeated identifiers ignored (first score kept): {repeats[:10]}")
    missing = [i + 1 for i, s in enumerate(scores) if s is None]
    if missing:
        parsed.problems.append(f"{len(missing)} of {n} passages without a score: {missing[:10]}")
    return scores, parsed
