"""The LaMP floors (majority, user-majority, user-mean, knn) worked out by hand on the fixtures,
and the LaMP generator taking its task from the data."""

from __future__ import annotations

import json

import pytest

from conftest import FIXTURES
from personarag import InputError, Pipeline, registry
from personarag.cli import main
from personarag.evaluation.lamp import load_lamp
from personarag.evaluation.lamp_runner import run_lamp
from personarag.generators.floors import KnnGenerator, MajorityGenerator, UserMajorityGenerator, UserMeanGenerator
from personarag.generators.lamp import LaMPGenerator
from personarag.testing import ScriptedLLM
from personarag.types import Query, Ranking, ScoredDoc

LAMP = FIXTURES / "lamp"


def lamp(number: int):
    folder = LAMP / f"LaMP_{number}"
    return load_lamp(f"LaMP-{number}", folder / "dev_questions.json", folder / "dev_outputs.json")


def answers(generator, data, rankings=None):
    rankings = rankings or [Ranking(e.query, ()) for e in data]
    return [o.text for o in generator.generate(rankings)]


def ranked(query, ids):
    """`query`'s own history items `ids`, in this order (rank 1 first)."""
    by_id = {d.id: d for d in query.user.history}
    return Ranking(query, tuple(ScoredDoc(by_id[i], 1.0 / (r + 1)) for r, i in enumerate(ids)))


# LaMP_2 fixture: ann (2-1, 2-2) tagged sci-fi, comedy, sci-fi; bob (2-3) twist ending, action.
# Golds: sci-fi, comedy, twist ending. LaMP_3 fixture: cara (3-1) rated 1, 4, 2; dan (3-2, 3-3)
# rated 5, 5. Golds: 1, 5, 3.

def test_majority_is_the_most_frequent_profile_label_of_the_split_users():
    data2, data3 = lamp(2), lamp(3)
    assert answers(MajorityGenerator().fit_users(data2.users), data2) == ["sci-fi"] * 3  # 2 of 5 labels
    assert answers(MajorityGenerator().fit_users(data3.users), data3) == ["5"] * 3  # dan's two 5s (each user once)
    assert answers(MajorityGenerator(label="4"), data3) == ["4"] * 3
    with pytest.raises(InputError, match="fit_users"):
        MajorityGenerator().generate(Ranking(data3.examples[0].query, ()))


def test_user_majority_breaks_ties_by_split_frequency_then_label_order():
    data2, data3 = lamp(2), lamp(3)
    # bob: twist ending and action once each, both once in the split -> the earlier label, action
    assert answers(UserMajorityGenerator().fit_users(data2.users), data2) == ["sci-fi", "sci-fi", "action"]
    # cara: 1, 4, 2 once each -> "1", first in the label order
    assert answers(UserMajorityGenerator(), data3) == ["1", "5", "5"]


def test_user_mean_rounds_half_up():
    data3 = lamp(3)
    assert answers(UserMeanGenerator(), data3) == ["2", "5", "5"]  # cara: 7/3 -> 2
    with pytest.raises(InputError, match="does not apply to LaMP-2"):
        UserMeanGenerator(task="LaMP-2")


def test_knn_votes_with_rank_weights():
    data2, data3 = lamp(2), lamp(3)
    ann = data2.examples[0].query
    # comedy 1/1 against sci-fi 1/2 + 1/3: comedy; with equal weights sci-fi 2 against 1
    assert answers(KnnGenerator(), data2, [ranked(ann, ["202", "201", "203"])]) == ["comedy"]
    assert answers(KnnGenerator(weighting="uniform"), data2, [ranked(ann, ["202", "201", "203"])]) == ["sci-fi"]
    cara = data3.examples[0].query
    # (4 + 1/2 + 2/3) / (1 + 1/2 + 1/3) = 2.818 -> 3; the mode of the same votes: 4
    out = KnnGenerator().generate([ranked(cara, ["302", "301", "303"])])[0]
    assert out.text == "3" and out.trace[-1].info["mean"] == pytest.approx((4 + 0.5 + 2 / 3) / (11 / 6))
    assert [d.doc.id for d in out.context] == ["302", "301", "303"]
    assert answers(KnnGenerator(vote="mode"), data3, [ranked(cara, ["302", "301", "303"])]) == ["4"]
    # nothing retrieved: the user's majority, said in the trace
    empty = KnnGenerator().generate([Ranking(cara, ())])[0]
    assert empty.text == "1" and "user's majority" in empty.trace[-1].problems[0]


def test_knn_on_generation_tasks_copies_the_top_items_title():
    data4 = lamp(4)
    query = data4.examples[0].query
    top = query.user.history[1]
    out = KnnGenerator().generate([ranked(query, [top.id, query.user.history[0].id])])[0]
    assert out.text == top.meta["title"] and [d.doc.id for d in out.context] == [top.id]


def test_label_floors_refuse_tasks_without_labels():
    with pytest.raises(InputError, match="does not apply to LaMP-4.*knn"):
        UserMajorityGenerator(task="LaMP-4")
    with pytest.raises(InputError, match="does not apply to LaMP-5"):
        MajorityGenerator().generate([Ranking(lamp(5).examples[0].query, ())])
    with pytest.raises(InputError, match="label="):
        MajorityGenerator().fit_users(lamp(1).users).generate([Ranking(lamp(1).examples[0].query, ())])
    assert answers(MajorityGenerator(label="[2]"), lamp(1)) == ["[2]"] * len(lamp(1))
    with pytest.raises(InputError, match="set up for LaMP-2, but query '3-1' is a LaMP-3"):
        KnnGenerator(task="LaMP-2").generate([Ranking(lamp(3).examples[0].query, ())])
    with pytest.raises(InputError, match="no task"):
        KnnGenerator().generate([Ranking(Query("q", "rate this"), ())])


def test_floors_run_through_the_runner_with_metrics_by_hand(tmp_path):
    data2, data3 = lamp(2), lamp(3)
    result = run_lamp(data3, Pipeline(["user-mean"]), tmp_path / "mean", progress=False)
    assert result.metrics["mae"] == pytest.approx((1 + 0 + 2) / 3)
    result = run_lamp(data3, Pipeline(["majority"]), tmp_path / "majority", progress=False)  # fitted by the runner
    assert result.metrics["mae"] == pytest.approx((4 + 0 + 2) / 3)
    # recency k=2 for cara: 303 (2), 302 (4) -> (2 + 4/2) / 1.5 = 2.67 -> 3; dan: 5
    result = run_lamp(data3, Pipeline(["recency", "knn"], k=2, context_k=2), tmp_path / "knn", progress=False)
    predictions = [json.loads(line)["prediction"] for line in (tmp_path / "knn" / "predictions.jsonl").read_text().splitlines()]
    assert predictions == ["3", "5", "5"] and result.metrics["mae"] == pytest.approx((2 + 0 + 2) / 3)
    result = run_lamp(data2, Pipeline([registry.build("user-majority")]), tmp_path / "um2", progress=False)
    assert result.metrics["accuracy"] == pytest.approx(1 / 3)


def test_floor_from_the_cli(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["eval", "lamp", "--task", "LaMP-3", "--questions", str(LAMP / "LaMP_3" / "dev_questions.json"),
                 "--outputs", str(LAMP / "LaMP_3" / "dev_outputs.json"), "--retriever", "none", "--generator", "user-majority", "--output-dir", str(out)])
    assert code == 0
    assert json.loads((out / "metrics.json").read_text())["mae"] == pytest.approx(2 / 3)


# --- the LaMP generator's task comes from the data ----------------------------------------
def test_lamp_generator_uses_the_task_of_the_data():
    data4 = lamp(4)
    llm = ScriptedLLM(default="A Headline")
    outputs = Pipeline(["history:bm25", "lamp:scripted"], k=1, context_k=1)
    outputs.generator._llm = llm
    texts = [o.text for o in outputs.run(data4.queries)]
    assert texts == ["A Headline", "A Headline"]
    prompt = llm.seen[0][0].content
    assert prompt.endswith("Answer with the headline only.") and "is the score for" not in prompt
    assert outputs.generator.generation_config().max_new_tokens == 48  # LaMP-4's answer length


def test_lamp_generator_task_mismatch_is_an_input_error():
    with pytest.raises(InputError, match="set up for LaMP-3, but query .* is a LaMP-4"):
        LaMPGenerator(ScriptedLLM(default="x"), task="LaMP-3").generate([Ranking(lamp(4).examples[0].query, ())])
    with pytest.raises(InputError, match="no task"):
        LaMPGenerator(ScriptedLLM(default="x")).generate([Ranking(Query("q", "a text"), ())])
    # a task given explicitly still answers queries that carry none
    assert LaMPGenerator(ScriptedLLM(default="4"), task="LaMP-3").generate([Ranking(Query("q", "a text"), ())])[0].text == "4"
