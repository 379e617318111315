"""IR metrics through ir_measures (pytrec_eval underneath), where every judged query counts.

Measure names are ir_measures strings (`nDCG@10`, `R@100`, `AP`, `RR@10`, `P@10`), plus
the common spellings `Recall@k`, `MAP` and `MRR@k`; results are keyed by the name asked.
pytrec_eval only scores queries present in the run, so a judged query the system
returned nothing for would vanish from the mean; here it scores 0 and stays in.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from personarag.errors import InputError
from personarag.evaluation.qrels import Qrels
from personarag.evaluation.runs import Run
from personarag.types import Ranking

logger = logging.getLogger(__name__)

DEFAULT_MEASURES: tuple[str, ...] = ("nDCG@10", "Recall@100", "MAP", "MRR@10")

# Spellings people use that ir_measures names differently (the key reported stays as asked).
_ALIASES = (
    (re.compile(r"^MRR(?=@|\(|$)"), "RR"),
    (re.compile(r"^Recall(?=@|\(|$)"), "R"),
    (re.compile(r"^MAP(?=@|\(|$)"), "AP"),
)


def parse_measure(name: Any) -> Any:
    """An ir_measures measure object from a name like `nDCG@10` or `MRR@10`."""
    import ir_measures

    if not isinstance(name, str):
        if hasattr(name, "NAME") and hasattr(name, "params"):  # already an ir_measures measure
            return name
        raise InputError(f"a measure must be a name like 'nDCG@10', got {name!r}")
    text = name.strip()
    for pattern, replacement in _ALIASES:
        text = pattern.sub(replacement, text)
    try:
        return ir_measures.parse_measure(text)
    except (NameError, ValueError, SyntaxError, TypeError) as error:
        raise InputError(
            f"unknown measure {name!r} ({error}); use ir_measures names such as "
            "nDCG@10, Recall@100 (R@100), MAP (AP), MRR@10 (RR@10), P@10"
        ) from None


@dataclass(frozen=True)
class EvalResult:
    """Mean of each measure over every judged query, and the per-query values behind it."""

    aggregate: dict[str, float]
    per_query: dict[str, dict[str, float]]
    missing_queries: tuple[str, ...] = ()
    measures: tuple[str, ...] = field(default=())

    @property
    def num_queries(self) -> int:
        return len(self.per_query)

    def format_table(self, digits: int = 4) -> str:
        width = max([len("measure")] + [len(k) for k in self.aggregate])
        lines = [f"{'measure'.ljust(width)}  value", f"{'-' * width}  {'-' * (digits + 2)}"]
        lines += [f"{key.ljust(width)}  {value:.{digits}f}" for key, value in self.aggregate.items()]
        lines.append(f"({self.num_queries} judged queries, {len(self.missing_queries)} with no results)")
        return "\n".join(lines)


def evaluate(
    run_or_rankings: Run | Iterable[Ranking] | Mapping[str, Mapping[str, float]],
    qrels: Qrels | Mapping[str, Mapping[str, int]],
    measures: Sequence[Any] = DEFAULT_MEASURES,
) -> EvalResult:
    """Score a run (or rankings, or unordered {query: {doc: score}}) against `qrels`.

    The run's order is what gets scored: ties and any scores that rise down a ranking
    do not reorder it (pytrec_eval would re-sort by score and break ties by doc id).
    """
    import ir_measures

    if isinstance(measures, str):
        measures = [measures]
    if not measures:
        raise InputError("no measures given; e.g. measures=('nDCG@10', 'Recall@100')")
    keys: list[str] = []
    parsed: dict[str, Any] = {}
    for name in measures:
        key = name.strip() if isinstance(name, str) else str(name)
        if key not in parsed:
            keys.append(key)
            parsed[key] = parse_measure(name)
    qrels = qrels if isinstance(qrels, Qrels) else Qrels(qrels)
    if len(qrels) == 0:
        raise InputError("the qrels are empty: there is nothing to evaluate against")
    run = _as_run(run_or_rankings)

    judged = qrels.query_ids
    judged_set = set(judged)
    # Scores from ranks, so pytrec_eval sees exactly the run's order.
    ranked = {
        q: {doc: float(len(docs) - i) for i, (doc, _) in enumerate(docs)}
        for q, docs in run.items()
        if q in judged_set and docs
    }
    unjudged = sum(1 for q in run if q not in judged_set)
    if unjudged:
        logger.info("%d queries in the run have no judgements and are not scored", unjudged)
    missing = tuple(q for q in judged if q not in ranked)
    if missing:
        logger.warning("%d of %d judged queries have no results in the run; they score 0", len(missing), len(judged))

    measure_objects = list({str(m): m for m in parsed.values()}.values())
    values: dict[str, dict[str, float]] = {q: {} for q in judged}
    if ranked:
        trec_qrels = {q: dict(qrels[q]) for q in judged}
        pytrec = ir_measures.pytrec_eval
        native = [m for m in measure_objects if pytrec.supports(m)]
        others = [m for m in measure_objects if not pytrec.supports(m)]
        metrics = list(pytrec.iter_calc(native, trec_qrels, ranked)) if native else []
        if others:
            metrics += list(ir_measures.iter_calc(others, trec_qrels, ranked))
        for metric in metrics:
            if metric.query_id in values:
                values[metric.query_id][str(metric.measure)] = float(metric.value)

    per_query: dict[str, dict[str, float]] = {}
    for q in judged:
        per_query[q] = {key: values[q].get(str(parsed[key]), 0.0) for key in keys}
    aggregate = {key: math.fsum(per_query[q][key] for q in judged) / len(judged) for key in keys}
    return EvalResult(aggregate=aggregate, per_query=per_query, missing_queries=missing, measures=tuple(keys))


def _as_run(value: Any) -> Run:
    if isinstance(value, Run):
        return value
    if isinstance(value, Ranking):
        return Run.from_rankings([value])
    if isinstance(value, Mapping):
        return Run.from_scores(value)
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        return Run.from_rankings(list(value))
    raise InputError(f"expected a Run, rankings, or {{query: {{doc: score}}}}, got {type(value).__name__}")
