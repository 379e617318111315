"""The chance floor of a reranker: nDCG@10 when the top DEPTH of a suite's first stage is shuffled.

A reranker whose scores carry no information about relevance orders the top DEPTH at random;
this is what it would score on average (the rest of the ranking keeps the first stage's order).
Reads the first-stage rankings a `personarag compare` run wrote (ids and scores only).

    .venv/bin/python eval/random_order_floor.py SUITE_OUT/bm25/rankings.jsonl QRELS DEPTH [SHUFFLES]
"""

import json
import random
import statistics
import sys

from personarag.evaluation.metrics import evaluate
from personarag.evaluation.qrels import Qrels
from personarag.types import Document, Query, Ranking, ScoredDoc

rankings_path, qrels_path, depth, *rest = sys.argv[1:]
depth, shuffles = int(depth), int(rest[0]) if rest else 200
qrels = Qrels.read(qrels_path)
first = []
with open(rankings_path) as lines:
    for line in lines:
        record = json.loads(line)
        docs = [ScoredDoc(Document(d, ""), s) for d, s in record["docs"]]
        first.append(Ranking(Query(record["id"], record["id"]), docs))
# Only the suite's queries count (a BEIR qrels file judges the whole split).
qrels = Qrels({r.query.id: dict(qrels.get(r.query.id, {})) for r in first if qrels.get(r.query.id)})
rng = random.Random(0)
values = []
for _ in range(shuffles):
    shuffled = []
    for ranking in first:
        head = list(ranking.docs[:depth])
        rng.shuffle(head)
        shuffled.append(Ranking(ranking.query, head + list(ranking.docs[depth:])))
    values.append(evaluate(shuffled, qrels, ["nDCG@10"]).aggregate["nDCG@10"])
print(json.dumps({"queries": len(first), "depth": depth, "shuffles": shuffles,
                  "first_stage_nDCG@10": evaluate(first, qrels, ["nDCG@10"]).aggregate["nDCG@10"],
                  "random_nDCG@10_mean": statistics.fmean(values), "random_nDCG@10_sd": statistics.stdev(values)}))
