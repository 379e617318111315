"""Score a reranked run interpolated with its first-stage run, for given first_stage_weight values.

The same fusion `cross-encoder:PATH` applies with `first_stage_weight` (rerankers.interpolation;
tests/test_cross_encoder_reranker.py checks the two agree), computed from two TREC run files
so a reranker's scores are paid for once. Only the reranked depth of the first stage is fused;
documents below it keep their first-stage order underneath.

    .venv/bin/python eval/interpolate_runs.py FIRST_STAGE.trec RERANKED.trec QRELS.tsv W [W ...]
"""

import json
import sys

from personarag.evaluation.metrics import evaluate
from personarag.evaluation.qrels import Qrels
from personarag.evaluation.runs import Run
from personarag.rerankers.interpolation import interpolate_rankings
from personarag.types import Document, Query, Ranking, ScoredDoc

MEASURES = ("nDCG@10", "Recall@100", "MAP", "MRR@10")


def rankings(run: Run) -> dict[str, Ranking]:
    return {q: Ranking(Query(q, q), [ScoredDoc(Document(d, ""), s) for d, s in run[q]]) for q in run}


first_path, reranked_path, qrels_path, *weights = sys.argv[1:]
first, reranked = rankings(Run.read_trec(first_path)), rankings(Run.read_trec(reranked_path))
qrels = Qrels.read(qrels_path)
results = {}
for weight in map(float, weights):
    fused = []
    for query_id, ranking in reranked.items():
        head = interpolate_rankings(first[query_id], ranking, weight)
        seen = {sd.id for sd in head}
        tail = [sd for sd in first[query_id].docs if sd.id not in seen]
        fused.append(Ranking(ranking.query, head + tail))
    results[str(weight)] = evaluate(fused, qrels, MEASURES).aggregate
print(json.dumps(results, indent=1))
