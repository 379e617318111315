"""LaMP metrics and the parsing of model outputs into each task's answer space.

- LaMP-1 (citation, labels `[1]`/`[2]`): accuracy.
- LaMP-2 (movie tags): accuracy and macro-F1 over the task's whole label set. As in the
  official LaMP evaluation (scikit-learn `f1_score(labels=all labels, average="macro")`),
  every label of the set is averaged in, and a label with no precision or recall defined
  (never predicted, or never gold) scores 0 for that part.
- LaMP-3 (rating 1-5): MAE and RMSE. A prediction is parsed as the first number in the
  text; a prediction with no number, or a number outside 1..5, is *unparsable*: it is
  counted in `unparsable` and scored as the worse of the two ends of the scale for that
  gold (1 when |gold - 1| > |gold - 5|, else 5), i.e. the largest error it could make, as
  the official LaMP evaluation does.
- LaMP-4/5/6/7: mean per-example ROUGE-1 and ROUGE-L F-measure (`rouge-score`, no stemming
  by default, like the HF `evaluate` "rouge" metric LaMP used).

For LaMP-1/2 an output that names no label is counted in `unparsable` and is wrong (it
is a false negative for the gold label). Every gold counts: a missing prediction is an
empty, unparsable one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from personarag.errors import InputError, require
from personarag.evaluation.lamp_tasks import LampTask, get_task

#: the metric each task is usually compared on (lower is better for MAE/RMSE)
PRIMARY = {"LaMP-1": "accuracy", "LaMP-2": "accuracy", "LaMP-3": "mae", "LaMP-4": "rouge-1",
           "LaMP-5": "rouge-1", "LaMP-6": "rouge-1", "LaMP-7": "rouge-1"}
LOWER_IS_BETTER = frozenset({"mae", "rmse"})

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_BRACKETED = re.compile(r"\[\s*(\d+)\s*\]")
_BARE_DIGIT = re.compile(r"(?<![\w.])(\d+)(?!\w|\.\d)")


@dataclass(frozen=True)
class LampScores:
    task: str
    aggregate: dict[str, float]
    per_example: dict[str, dict[str, Any]] = field(default_factory=dict)


def _norm(text: str) -> str:
    """Lowercase, hyphens/underscores as spaces, quotes and edge punctuation gone, spaces collapsed."""
    text = text.lower().replace("-", " ").replace("_", " ")
    text = re.sub(r"[\"'`“”‘’*]", "", text)
    return " ".join(text.split()).strip(" .,:;!?()")


def parse_label(text: str, labels: Sequence[str]) -> str | None:
    """The label an output names, or None.

    Bracketed labels (`[1]`, `[2]`): the first `[n]` in the text, else the first bare `n`,
    kept when it is a label. Word labels: the whole normalised output when it equals a label,
    else the label found earliest in it as whole words (the longer one on a tie, so
    "dark comedy" wins over "comedy").
    """
    if not isinstance(text, str):
        return None
    if labels and all(_BRACKETED.fullmatch(label) for label in labels):
        for pattern in (_BRACKETED, _BARE_DIGIT):
            match = pattern.search(text)
            if match:
                label = f"[{int(match.group(1))}]"
                return label if label in labels else None
        return None
    by_norm = {_norm(label): label for label in labels}
    normed = _norm(text)
    if normed in by_norm:
        return by_norm[normed]
    best: tuple[int, int, str] | None = None
    for key, label in by_norm.items():
        match = re.search(rf"(?<!\w){re.escape(key)}(?!\w)", normed)
        if match and (best is None or (match.start(), -len(key)) < (best[0], best[1])):
            best = (match.start(), -len(key), label)
    return best[2] if best else None


def parse_rating(text: str, low: float = 1.0, high: float = 5.0) -> float | None:
    """The first number in `text` when it lies in [low, high], else None."""
    match = _NUMBER.search(text) if isinstance(text, str) else None
    if match is None:
        return None
    value = float(match.group())
    return value if low <= value <= high else None


def parse_prediction(task: str | LampTask, text: str) -> str | float | None:
    """An output mapped into the task's answer space (None when it cannot be)."""
    spec = get_task(task)
    if spec.kind == "classification":
        return parse_label(text, spec.labels)
    if spec.kind == "rating":
        return parse_rating(text)
    return text.strip() if isinstance(text, str) else None


def score_lamp(
    task: str | LampTask,
    predictions: Mapping[str, str],
    golds: Mapping[str, str],
    *,
    labels: Sequence[str] | None = None,
    use_stemmer: bool = False,
) -> LampScores:
    """Aggregate and per-example scores of `predictions` (id -> raw output) against `golds`."""
    spec = get_task(task)
    if not golds:
        raise InputError(f"{spec.name}: no gold outputs to score against")
    unknown = [i for i in predictions if i not in golds]
    if unknown:
        raise InputError(f"{len(unknown)} predictions have no gold (e.g. {', '.join(unknown[:5])})")
    ids = list(golds)
    outputs = [predictions.get(i, "") or "" for i in ids]
    gold_texts = [golds[i] for i in ids]
    if spec.kind == "classification":
        return _classification(spec, ids, outputs, gold_texts, tuple(labels or spec.labels))
    if spec.kind == "rating":
        return _rating(spec, ids, outputs, gold_texts)
    return _rouge(spec, ids, outputs, gold_texts, use_stemmer)


def _classification(spec: LampTask, ids, outputs, gold_texts, labels) -> LampScores:
    parsed = [parse_label(o, labels) for o in outputs]
    gold_labels = []
    for example_id, gold in zip(ids, gold_texts):
        label = parse_label(gold, labels)
        if label is None:
            raise InputError(f"{spec.name} gold {gold!r} of {example_id!r} is not one of the labels {list(labels)}")
        gold_labels.append(label)
    correct = [p == g for p, g in zip(parsed, gold_labels)]
    aggregate = {"accuracy": sum(correct) / len(ids), "unparsable": float(sum(p is None for p in parsed)), "n": float(len(ids))}
    if len(labels) > 2:
        aggregate["f1"] = macro_f1(parsed, gold_labels, labels)
    per_example = {i: {"parsed": p, "correct": c} for i, p, c in zip(ids, parsed, correct)}
    return LampScores(spec.name, aggregate, per_example)


def macro_f1(predicted: Sequence[str | None], gold: Sequence[str], labels: Sequence[str]) -> float:
    """Mean over all `labels` of per-label F1; undefined precision or recall counts as 0."""
    total = 0.0
    for label in labels:
        tp = sum(p == label and g == label for p, g in zip(predicted, gold))
        fp = sum(p == label and g != label for p, g in zip(predicted, gold))
        fn = sum(p != label and g == label for p, g in zip(predicted, gold))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        total += 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return total / len(labels)


def _rating(spec: LampTask, ids, outputs, gold_texts) -> LampScores:
    errors, per_example, unparsable = [], {}, 0
    for example_id, output, gold_text in zip(ids, outputs, gold_texts):
        gold = parse_rating(gold_text)
        if gold is None:
            raise InputError(f"{spec.name} gold {gold_text!r} of {example_id!r} is not a rating from 1 to 5")
        value = parse_rating(output)
        if value is None:
            unparsable += 1
            scored = 1.0 if abs(1.0 - gold) > abs(5.0 - gold) else 5.0
        else:
            scored = value
        errors.append(abs(scored - gold))
        per_example[example_id] = {"parsed": value, "abs_error": abs(scored - gold)}
    aggregate = {
        "mae": sum(errors) / len(errors),
        "rmse": math.sqrt(sum(e * e for e in errors) / len(errors)),
        "unparsable": float(unparsable),
        "n": float(len(ids)),
    }
    return LampScores(spec.name, aggregate, per_example)


def _rouge(spec: LampTask, ids, outputs, gold_texts, use_stemmer: bool) -> LampScores:
    rouge_scorer = require("rouge_score.rouge_scorer", "lamp", purpose="LaMP ROUGE metrics")
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=use_stemmer)
    per_example = {}
    for example_id, output, gold in zip(ids, outputs, gold_texts):
        scores = scorer.score(gold, output.strip())  # score(target, prediction)
        per_example[example_id] = {"rouge-1": scores["rouge1"].fmeasure, "rouge-L": scores["rougeL"].fmeasure}
    n = len(ids)
    aggregate = {
        "rouge-1": sum(s["rouge-1"] for s in per_example.values()) / n,
        "rouge-L": sum(s["rouge-L"] for s in per_example.values()) / n,
        "n": float(n),
    }
    return LampScores(spec.name, aggregate, per_example)
