"""Score a reranked run interpolated with its first-stage run, for given first_stage_weight values.

The same fusion `cross-encoder:PATH` applies with `first_stage_weight` (rerankers.interpolation;
tests/test_cross_encoder_reranker.py checks the two agree), computed from two TREC run files
so a reranker's scores are paid for once. Only the reranked depth of the first stage is fused;
documents below it keep their first-stage order underneath.

    .venv/bin/python eval/interpolate_runs.py FIRST_STAGE.trec RERANKED.trec QRELS.tsv W [W ...] \
        [--depth N] [--measures M ...]

--depth N: only the top N of RERANKED carry the reranker's scores (a run written with
rerank_depth N lists the first stage's tail, with its own scores, beneath them); by default every
document of RERANKED does. --run-queries-only: judged queries missing from RERANKED do not count
(for runs over the first N queries). --measures: ir_measures names, e.g. "MRR(rel=2)@10" for TREC DL.
"""

import argparse
import json

from personarag.evaluation.metrics import evaluate
from personarag.evaluation.qrels import Qrels
from personarag.evaluation.runs import Run
from personarag.experiment.measures import paired_t_test
from personarag.rerankers.interpolation import interpolate_rankings
from personarag.types import Document, Query, Ranking, ScoredDoc

MEASURES = ("nDCG@10", "Recall@100", "MAP", "MRR@10")


def rankings(run: Run) -> dict[str, Ranking]:
    return {q: Ranking(Query(q, q), [ScoredDoc(Document(d, ""), s) for d, s in run[q]]) for q in run}


parser = argparse.ArgumentParser()
parser.add_argument("first_stage")
parser.add_argument("reranked")
parser.add_argument("qrels")
parser.add_argument("weights", nargs="+", type=float)
parser.add_argument("--depth", type=int, default=None)
parser.add_argument("--measures", nargs="+", default=list(MEASURES))
parser.add_argument("--paired-t", action="store_true", help="add each measure's paired t-test p-value against the first stage alone")
parser.add_argument("--run-queries-only", action="store_true", help="score only the queries of RERANKED (a max_queries subset)")
args = parser.parse_args()
first, reranked = rankings(Run.read_trec(args.first_stage)), rankings(Run.read_trec(args.reranked))
if args.depth is not None:
    reranked = {q: Ranking(r.query, r.docs[: args.depth]) for q, r in reranked.items()}
qrels = Qrels.read(args.qrels)
if args.run_queries_only:
    qrels = qrels.subset(reranked)
results = {}
for weight in args.weights:
    fused = []
    for query_id, ranking in reranked.items():
        head = interpolate_rankings(first[query_id], ranking, weight)
        seen = {sd.id for sd in head}
        tail = [sd for sd in first[query_id].docs if sd.id not in seen]
        fused.append(Ranking(ranking.query, head + tail))
    scored = evaluate(fused, qrels, args.measures)
    results[str(weight)] = dict(scored.aggregate)
    if args.paired_t:
        alone = evaluate([first[q] for q in reranked], qrels, args.measures)
        for measure in scored.aggregate:
            pairs = [(scored.per_query[q][measure], alone.per_query[q][measure]) for q in sorted(alone.per_query)]
            results[str(weight)][f"p_vs_first_stage[{measure}]"] = paired_t_test([a for a, _ in pairs], [b for _, b in pairs])
print(json.dumps(results, indent=1))
