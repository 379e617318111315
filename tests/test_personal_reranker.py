"""The personalized cross-encoder reranker and its training from LLM feedback (issue 12, items 4-5)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from personarag.errors import InputError
from personarag.types import Document, Query, Ranking, ScoredDoc, User
from tests.training_models import tiny_bert

pytest.importorskip("sentence_transformers")
pytest.importorskip("datasets")

PROMPT = "What is the score of the following review on a scale of 1 to 5? review: "
REVIEWS = ["the strings sound bright and last long", "cheap cable broke after a week", "the tuner is accurate and easy",
           "pedal is noisy and hums badly", "great stand, solid and light", "strap slipped and the lock failed"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("tiny_ce") / "model")


def item(i: int, score: int, text: str) -> Document:
    return Document(f"i{i}", text, meta={"text": text, "score": str(score), "date": f"2012-01-{i + 1:02d}"})


def test_soft_target_by_hand():
    from personarag.training.soft_targets import label_utility, soft_target

    # utilities 0, -1, -2 at temperature 1: e^0, e^-1, e^-2 over their sum
    total = 1 + math.exp(-1) + math.exp(-2)
    assert soft_target([0.0, -1.0, -2.0]) == pytest.approx([1 / total, math.exp(-1) / total, math.exp(-2) / total])
    # temperature 0.5 doubles the gaps; -inf (gold impossible with that item) gets 0
    assert soft_target([0.0, -1.0, -math.inf], 0.5) == pytest.approx([1 / (1 + math.exp(-2)), math.exp(-2) / (1 + math.exp(-2)), 0.0])
    assert label_utility("LaMP-3", "2", "5") == -3.0 and label_utility("LaMP-3", None, "5") == -4.0
    assert label_utility("LaMP-2", "Comedy", "comedy") == 1.0 and label_utility("LaMP-2", "drama", "comedy") == 0.0
    with pytest.raises(InputError, match="at least two"):
        soft_target([1.0])
    with pytest.raises(InputError, match="every utility is -inf"):
        soft_target([-math.inf, -math.inf])
    with pytest.raises(InputError, match="temperature"):
        soft_target([0.0, 1.0], 0)


def test_kl_loss_matches_the_formula(tiny_model):
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder

    from personarag.training.soft_targets import kl_loss

    model = CrossEncoder(str(tiny_model), num_labels=1, max_length=32)
    loss = kl_loss(model)
    docs = [["a b", "c d", "e f"], ["g h", "i j"]]
    targets = [torch.tensor([0.7, 0.2, 0.1]), torch.tensor([0.5, 0.5])]
    value = float(loss([["q1", "q2"], docs], targets))
    with torch.no_grad():
        logits = [model.predict([("q1", d) for d in docs[0]], activation_fn=torch.nn.Identity(), convert_to_tensor=True),
                  model.predict([("q2", d) for d in docs[1]], activation_fn=torch.nn.Identity(), convert_to_tensor=True)]
    expected = sum(sum(p * (math.log(p) - lp) for p, lp in zip(t.tolist(), torch.log_softmax(x, 0).tolist()))
                   for t, x in zip(targets, logits)) / 2
    assert value == pytest.approx(expected, rel=1e-4)
    with pytest.raises(InputError, match="sum to 1"):
        loss([["q1"], [["a", "b"]]], [torch.tensor([0.9, 0.9])])


LOVER = User("lover", (item(0, 5, "loved it"),))
HATER = User("hater", (item(0, 1, "hated it"),))
GOOD_BAD = (ScoredDoc(Document("good", "good", meta={"score": "5"}), 0.0), ScoredDoc(Document("bad", "bad", meta={"score": "1"}), 0.0))


@pytest.fixture(scope="module")
def user_aware_model(tmp_path_factory) -> Path:
    """MiniLM trained with the KL loss on (user context + query, candidate) pairs built by the reranker itself:
    the same query and candidates, the user who rated 5 prefers the 5, the one who rated 1 the 1."""
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments

    from personarag.personal.reranker import PersonalCrossEncoderReranker, candidate_text
    from personarag.training.soft_targets import kl_loss, soft_target
    from tests.training_models import minilm_dir

    torch.set_num_threads(1)
    shape = PersonalCrossEncoderReranker(str(minilm_dir()), context_items=1, fields=["score"], max_length=32)
    docs = [candidate_text(s.doc, shape.fields) for s in GOOD_BAD]
    rows = {"query": [], "docs": [], "labels": []}
    for _ in range(8):
        for user, utilities in ((LOVER, [0.0, -4.0]), (HATER, [-4.0, 0.0])):
            rows["query"].append(shape.pair_query(Query("q", "which one", user=user)))
            rows["docs"].append(docs)
            rows["labels"].append(soft_target(utilities, 2.0))
    out = tmp_path_factory.mktemp("user_aware")
    model = CrossEncoder(str(minilm_dir()), num_labels=1, max_length=32)
    args = CrossEncoderTrainingArguments(output_dir=str(out / "checkpoints"), max_steps=40, per_device_train_batch_size=4,
                                         learning_rate=2e-4, report_to="none", save_strategy="no", seed=0)
    CrossEncoderTrainer(model=model, args=args, train_dataset=Dataset.from_dict(rows), loss=kl_loss(model)).train()
    model.save_pretrained(str(out / "model"))
    return out / "model"


def test_the_order_changes_when_only_the_user_changes(user_aware_model):
    from personarag.personal.reranker import PersonalCrossEncoderReranker

    reranker = PersonalCrossEncoderReranker(str(user_aware_model), context_items=1, fields=["score"], max_length=32)
    ranked = {user.id: reranker.rerank(Ranking(Query("q", "which one", user=user), GOOD_BAD))[0] for user in (LOVER, HATER)}
    assert ranked["lover"].ids == ["good", "bad"]
    assert ranked["hater"].ids == ["bad", "good"]
    assert ranked["lover"].trace[-1].info["user"] == "lover"


def test_the_pair_holds_the_query_then_the_users_most_similar_items(tiny_model):
    from personarag.personal.reranker import PersonalCrossEncoderReranker

    reranker = PersonalCrossEncoderReranker(str(tiny_model), context_items=2, fields=["score"], max_length=128)
    user = User("u", tuple(item(i, s, t) for i, (s, t) in enumerate(
        [(5, "bright strings sound great"), (1, "cable hums and broke"), (4, "love this tuner, strings too")])))
    query = Query("q", PROMPT + "the strings sound bright", user=user)
    assert reranker.pair_query(query) == ("[user] score: 5 | bright strings sound great\nscore: 4 | love this tuner, strings too"
                                          " [query] " + PROMPT + "the strings sound bright")
    candidates = tuple(ScoredDoc(Document(f"c{i}", text, meta={"score": "3"}), 0.0) for i, text in enumerate(REVIEWS))
    pairs = reranker._pairs([Ranking(query, candidates)])
    assert pairs[0] == (reranker.pair_query(query), "score: 3 | " + REVIEWS[0]) and len(pairs) == len(REVIEWS)


def test_context_from_fitted_users_a_store_and_a_summary(tiny_model, tmp_path):
    from personarag.personal.reranker import PersonalCrossEncoderReranker

    stored = User("u", (item(0, 4, "the stand is solid"),))
    query = Query("q", "a solid stand", user=User("u", (item(1, 2, "old text"),)))
    reranker = PersonalCrossEncoderReranker(str(tiny_model), context_items=1, fields=["score"])
    assert reranker.pair_query(query) == "[user] score: 2 | old text [query] a solid stand"
    reranker.fit(users=[stored])
    assert reranker.pair_query(query).startswith("[user] score: 4 | the stand is solid [query]")
    from personarag.personal.store import UserStore

    with UserStore(tmp_path / "users.db") as store:
        store.add_users([User("u", (item(3, 1, "the stand wobbles"),))])
        reranker.fit(store=store)
        assert reranker.pair_query(query).startswith("[user] score: 1 | the stand wobbles [query]")
        unknown = Query("q4", "a stand", user=User("new", (item(4, 3, "first review"),)))
        assert reranker.pair_query(unknown).startswith("[user] score: 3 | first review [query]")  # not in the store: query.user
        from_store = PersonalCrossEncoderReranker(str(tiny_model), context_items=1, fields=["score"], summary_kind="LaMP-3")
        from_store.fit(store=store)
        assert from_store.pair_query(query).startswith("[user] score: 1 | the stand wobbles")  # no summary yet: the items
        store.put_summary("u", "LaMP-3", "rates wobbly stands low", history_version=store.history_version("u"), fingerprint="m@1")
        assert from_store.pair_query(query) == "[user] rates wobbly stands low [query] a solid stand"
        store.add_items("u", [item(5, 5, "a new stand, great")])  # the summary is now stale: back to the items
        assert from_store.pair_query(query).startswith("[user] score: 5 | a new stand, great")
    summaries = {"u": "likes sturdy gear, rates 4"}
    with_summary = PersonalCrossEncoderReranker(str(tiny_model), summary=summaries.get)
    assert with_summary.pair_query(query) == "[user] likes sturdy gear, rates 4 [query] a solid stand"
    other = Query("q2", "a solid stand", user=User("v", (item(2, 3, "a stand"),)))
    assert with_summary.pair_query(other) == "[user] a stand [query] a solid stand"  # no summary: the top items
    with pytest.raises(InputError, match="has no user"):
        reranker.pair_query(Query("q3", "no user"))
    with pytest.raises(InputError, match="context_items must be an integer >= 0"):
        PersonalCrossEncoderReranker(str(tiny_model), context_items=-1)


def write_lamp3(root: Path) -> tuple[Path, Path]:
    """Six users with four rated reviews each and two queries each; users 0-2 rate high, 3-5 low."""
    questions, outputs = [], []
    for u in range(6):
        high = u < 3
        profile = [{"id": f"{u}{j}", "text": REVIEWS[(u + j) % len(REVIEWS)], "score": str(5 - j if high else 1 + j),
                    "date": f"2012-01-0{j + 1}"} for j in range(4)]
        for q in range(2):
            questions.append({"id": f"3{u}{q}", "input": PROMPT + REVIEWS[(u + q + 1) % len(REVIEWS)], "profile": profile})
            outputs.append({"id": f"3{u}{q}", "output": "5" if high else "1"})
    root.mkdir(parents=True, exist_ok=True)
    (root / "dev_questions.json").write_text(json.dumps(questions))
    (root / "dev_outputs.json").write_text(json.dumps({"task": "LaMP_3", "golds": outputs}))
    return root / "dev_questions.json", root / "dev_outputs.json"


def test_train_command_end_to_end_and_the_artifact_loads_as_a_spec(tiny_model, tmp_path, capsys):
    from personarag.cli import main

    questions, outputs = write_lamp3(tmp_path / "lamp3")
    out = tmp_path / "reranker"
    command = ["train", "llm-feedback", "--target", "personalized-reranker",
               "--questions", str(questions), "--outputs", str(outputs), "--output-dir", str(out), "--base", str(tiny_model),
               "--utility", "label", "--candidates", "4", "--context-items", "2", "--max-length", "64", "--max-steps", "3",
               "--batch-size", "2", "--save-steps", "2", "--threads", "1", "--train-users", "0.5"]
    assert main(command) == 0
    assert f"personal-cross-encoder:{out}" in capsys.readouterr().out
    run = json.loads((out / "personarag_training.json").read_text())
    assert run["status"] == "finished" and run["global_step"] == 3
    assert len(run["trained_on"]) == 6 and len(run["held_out"]) == 6  # 3 of 6 users, 2 examples each
    assert not {e[:2] for e in run["trained_on"]} & {e[:2] for e in run["held_out"]}  # no user on both sides
    feedback = [json.loads(line) for line in (out / "feedback.jsonl").read_text().splitlines()]
    assert len(feedback) == 6 and all(len(row["docs"]) == 4 for row in feedback)
    for row in feedback:  # label utility: -|item score - gold|
        gold = 5 if int(row["id"][1]) < 3 else 1
        scores = {f"{row['id'][1]}{j}": (5 - j if gold == 5 else 1 + j) for j in range(4)}
        assert row["utilities"] == [-abs(scores[d] - gold) for d in row["docs"]]
    assert json.loads((out / "personal_reranker.json").read_text()) == {
        "context_items": 2, "max_length": 64, "fields": ["score"], "item_chars": 300, "candidate_chars": None}
    assert "personal-cross-encoder:" in (out / "README.md").read_text()

    from personarag.evaluation.lamp import load_lamp
    from personarag.pipeline import Pipeline

    data = load_lamp("LaMP-3", questions, outputs)
    pipe = Pipeline(["history:bm25", f"personal-cross-encoder:{out}"], k=4)
    reranker = pipe.stages[1]
    assert (reranker.context_items, reranker.max_length, reranker.fields) == (2, 64, ("score",))
    rankings = pipe.retrieve([e.query for e in data.examples if e.id in run["held_out"]])
    assert len(rankings) == 6 and all(len(r.docs) == 4 for r in rankings)

    assert main(command + ["--resume"]) == 0  # resumes from the last checkpoint; feedback reused
    assert json.loads((out / "personarag_training.json").read_text())["resumed_from"].endswith("checkpoint-3")

    capped = tmp_path / "capped"
    assert main([*command[:command.index("--output-dir") + 1], str(capped), *command[command.index("--output-dir") + 2:],
                 "--max-train-queries", "4"]) == 0
    run_capped = json.loads((capped / "personarag_training.json").read_text())
    assert set(run_capped["trained_on"]) < set(run["trained_on"]) and len(run_capped["trained_on"]) == 4
    assert run_capped["held_out"] == run["held_out"]  # the same users are held out; the cap only thins the others
    assert len((capped / "feedback.jsonl").read_text().splitlines()) == 4
    assert "at most 4 of their examples" in (capped / "README.md").read_text()


def test_llm_utility_is_the_log_likelihood_of_the_gold(tiny_model, tmp_path):
    from personarag.testing import ScriptedLLM
    from personarag.training.personal_reranker import PersonalRerankerRunConfig, collect

    questions, outputs = write_lamp3(tmp_path / "lamp3")

    def score(chat, answer):  # the LLM likes items that mention "strings"
        return -0.5 if "strings" in chat[-1].content else -3.0

    config = PersonalRerankerRunConfig(output_dir=str(tmp_path / "o"), questions=str(questions), outputs=str(outputs),
                                       base=str(tiny_model), llm=ScriptedLLM(scores=score), candidates=3)
    from personarag.evaluation.lamp import load_lamp

    examples = list(load_lamp("LaMP-3", questions, outputs).examples)[:2]
    feedback = collect(config, examples, tmp_path / "feedback.jsonl", resume=False)
    history = {d.id: d for d in examples[0].query.user.history}
    row = feedback[examples[0].id]
    assert len(row["docs"]) == 3
    assert row["utilities"] == [-0.5 if "strings" in history[d].text else -3.0 for d in row["docs"]]


def test_config_errors(tiny_model, tmp_path):
    from personarag.training.personal_reranker import PersonalRerankerRunConfig

    base = dict(output_dir=str(tmp_path), questions="q.json", outputs="o.json", base=str(tiny_model))
    with pytest.raises(InputError, match="needs llm"):
        PersonalRerankerRunConfig(**base)
    with pytest.raises(InputError, match="utility must be"):
        PersonalRerankerRunConfig(**base, utility="votes")
    with pytest.raises(InputError, match="train_users"):
        PersonalRerankerRunConfig(**base, utility="label", train_users=0)
    with pytest.raises(InputError, match="max_train_queries"):
        PersonalRerankerRunConfig(**base, utility="label", max_train_queries=0)
    assert PersonalRerankerRunConfig(**base, utility="label", task="LaMP-2").fields == ["tag"]


def test_the_command_picks_the_target_from_the_config_file(tmp_path, capsys):
    from personarag.cli import main

    config = tmp_path / "reranker.yaml"
    config.write_text("target: personalized-reranker\nutility: label\n")
    # the file's target selects the reranker's options: its required fields are asked for
    assert main(["train", "llm-feedback", "--config", str(config)]) == 2
    assert "give output_dir" in capsys.readouterr().err
    assert main(["train", "llm-feedback", "--config", str(config), "--target", "collaborative-scorer"]) == 2
    assert "says target: personalized-reranker, but --target collaborative-scorer" in capsys.readouterr().err
    assert main(["train", "llm-feedback", "--target", "personalized-reranker", "--m", "3"]) == 2
    assert "--target personalized-reranker takes no --m" in capsys.readouterr().err
