"""`personarag eval lamp` and the resumable LaMP runner, with a scripted LLM."""

from __future__ import annotations

import json
import math

import pytest

from conftest import FIXTURES
from personarag import InputError, Pipeline
from personarag.cli import main
from personarag.evaluation.lamp import load_lamp
from personarag.evaluation.lamp_runner import run_lamp
from personarag.generators.lamp import LaMPGenerator
from personarag.testing import ScriptedLLM, chat_text
from personarag.retrievers.base import Retriever
from personarag.types import Ranking, ScoredDoc

LAMP3 = FIXTURES / "lamp" / "LaMP_3"
RESPONSES = {"Not buying again": "1", "favourite pedal": "5 stars"}


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_config(tmp_path, **extra):
    config = {
        "task": "LaMP-3",
        "questions": str(LAMP3 / "dev_questions.json"),
        "outputs": str(LAMP3 / "dev_outputs.json"),
        "generator": {"spec": "lamp", "params": {"llm": {"spec": "scripted", "params": {"responses": RESPONSES, "default": "4"}}}},
        **extra,
    }
    path = tmp_path / "run.json"
    path.write_text(json.dumps(config))
    return path


def test_cli_with_recency_writes_predictions_retrievals_and_metrics(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["eval", "lamp", "--config", str(write_config(tmp_path)), "--retriever", "recency", "--k", "2", "--output-dir", str(out)])
    assert code == 0
    assert lines(out / "predictions.jsonl") == [
        {"id": "3-1", "prediction": "1", "gold": "1"},
        {"id": "3-2", "prediction": "5 stars", "gold": "5"},
        {"id": "3-3", "prediction": "4", "gold": "3"},
    ]
    retrieved = lines(out / "retrieved.jsonl")
    assert [r["id"] for r in retrieved] == ["3-1", "3-2", "3-3"]
    assert [d for d, _ in retrieved[0]["retrieved"]] == ["303", "302"]  # cara's two newest items
    assert retrieved[0]["context"] == ["303", "302"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mae"] == pytest.approx(1 / 3) and metrics["rmse"] == pytest.approx(math.sqrt(1 / 3))
    assert metrics["unparsable"] == 0.0 and metrics["n"] == 3.0
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == "LaMP-3" and config["k"] == 2 and config["retriever"] == {"spec": "recency", "params": {}}
    assert config["generator"]["params"]["task"] == "LaMP-3"
    assert "mae" in capsys.readouterr().out
    # config.json is itself a run config: passing it back resumes the same run, generating nothing
    assert main(["eval", "lamp", "--config", str(out / "config.json"), "--output-dir", str(out)]) == 0
    assert json.loads((out / "stats.json").read_text())["generated"] == 0


def test_cli_without_retrieval_gives_empty_contexts(tmp_path):
    out = tmp_path / "out"
    assert main(["eval", "lamp", "--config", str(write_config(tmp_path)), "--retriever", "none", "--output-dir", str(out)]) == 0
    assert all(r["retrieved"] == [] and r["context"] == [] and r["problems"] == [] for r in lines(out / "retrieved.jsonl"))


def test_cli_errors_are_reported_not_raised(tmp_path, capsys):
    config = write_config(tmp_path)
    assert main(["eval", "lamp", "--config", str(config), "--task", "LaMP-9", "--retriever", "none", "--output-dir", str(tmp_path / "o")]) == 2
    assert "valid tasks" in capsys.readouterr().err
    assert main(["eval", "lamp", "--config", str(config), "--output-dir", str(tmp_path / "o")]) == 2
    assert "--retriever" in capsys.readouterr().err


def dataset():
    return load_lamp("LaMP-3", LAMP3 / "dev_questions.json", LAMP3 / "dev_outputs.json")


class CrashingLLM(ScriptedLLM):
    """A scripted LLM that dies after `crash_after` generations; set after construction so
    that its config (and so the run's name) is the same as a plain ScriptedLLM's."""

    crash_after: int | None = None

    def _generate(self, chats, config):
        if self.crash_after is not None and self.calls + len(chats) > self.crash_after:
            raise RuntimeError("the GPU caught fire")
        return super()._generate(chats, config)


def test_a_crashed_run_resumes_without_redoing_finished_examples(tmp_path):
    out = tmp_path / "out"
    crashing = CrashingLLM(default="3")
    crashing.crash_after = 2
    pipeline = Pipeline(["history:bm25", LaMPGenerator(crashing, task="LaMP-3")], k=2, context_k=2)
    with pytest.raises(RuntimeError, match="fire"):
        run_lamp(dataset(), pipeline, out, batch_size=1, progress=False)
    assert crashing.calls == 2
    assert [r["id"] for r in lines(out / "predictions.jsonl")] == ["3-1", "3-2"]
    assert not (out / "metrics.json").exists()

    llm = ScriptedLLM(default="3")
    again = Pipeline(["history:bm25", LaMPGenerator(llm, task="LaMP-3")], k=2, context_k=2)
    result = run_lamp(dataset(), again, out, batch_size=1, progress=False)
    assert llm.calls == 1 and "Does the job" in chat_text(llm.seen[0])  # only 3-3 was generated
    assert (result.examples, result.generated) == (3, 1)
    assert [r["id"] for r in lines(out / "predictions.jsonl")] == ["3-1", "3-2", "3-3"]
    assert [r["id"] for r in lines(out / "retrieved.jsonl")] == ["3-1", "3-2", "3-3"]
    assert result.metrics["mae"] == pytest.approx((2 + 2 + 0) / 3)


def test_a_torn_last_line_is_dropped_and_redone(tmp_path):
    out = tmp_path / "out"
    pipeline = Pipeline([LaMPGenerator(ScriptedLLM(default="5"), task="LaMP-3")])
    run_lamp(dataset(), pipeline, out, progress=False)
    text = (out / "predictions.jsonl").read_text().splitlines(keepends=True)
    (out / "predictions.jsonl").write_text("".join(text[:2]) + text[2][:10])  # died while writing 3-3
    llm = ScriptedLLM(default="5")
    result = run_lamp(dataset(), Pipeline([LaMPGenerator(llm, task="LaMP-3")]), out, progress=False)
    assert llm.calls == 1 and result.generated == 1 and "Does the job" in chat_text(llm.seen[0])
    assert [r["id"] for r in lines(out / "predictions.jsonl")] == ["3-1", "3-2", "3-3"]
    assert len(lines(out / "retrieved.jsonl")) == 3  # the orphan retrieval line of 3-3 was replaced, not doubled


def test_a_run_can_be_extended_to_more_examples(tmp_path):
    out = tmp_path / "out"
    llm = ScriptedLLM(default="5")
    first = run_lamp(dataset().head(1), Pipeline([LaMPGenerator(llm, task="LaMP-3")]), out, run_config={"max_examples": 1}, progress=False)
    assert first.metrics["n"] == 1.0
    second = run_lamp(dataset(), Pipeline([LaMPGenerator(llm, task="LaMP-3")]), out, run_config={"max_examples": None}, progress=False)
    assert llm.calls == 3 and second.generated == 2 and second.metrics["n"] == 3.0


def test_a_different_run_in_the_same_folder_is_refused(tmp_path):
    out = tmp_path / "out"
    run_lamp(dataset(), Pipeline([LaMPGenerator(ScriptedLLM(default="5"), task="LaMP-3")]), out, progress=False)
    other = Pipeline(["recency", LaMPGenerator(ScriptedLLM(default="5"), task="LaMP-3")])
    with pytest.raises(InputError, match="different run"):
        run_lamp(dataset(), other, out, progress=False)
    llm = ScriptedLLM(default="2")
    result = run_lamp(dataset(), Pipeline(["recency", LaMPGenerator(llm, task="LaMP-3")]), out, overwrite=True, progress=False)
    assert llm.calls == 3 and result.metrics["mae"] == pytest.approx((1 + 3 + 1) / 3)


class SharedWords(Retriever):
    """History items sharing the most lowercase words with the query; an in-test stand-in retriever."""

    spec_name = "test-shared-words"
    needs_corpus = False

    def _index(self, corpus):
        raise AssertionError("not used")

    def _retrieve(self, queries, k):
        out = []
        for query in queries:
            words = set(query.text.lower().split())
            scored = [ScoredDoc(d, float(len(words & set(d.text.lower().split())))) for d in query.user.history]
            scored.sort(key=lambda s: -s.score)
            out.append(Ranking(query, scored[:k]))
        return out


def test_retrieved_items_reach_the_prompt_in_rank_order(tmp_path):
    llm = ScriptedLLM(default="2")
    pipeline = Pipeline([SharedWords(), LaMPGenerator(llm, task="LaMP-3")], k=1, context_k=1)
    run_lamp(dataset().head(1), pipeline, tmp_path / "out", progress=False)
    first = lines(tmp_path / "out" / "retrieved.jsonl")[0]
    # the LaMP input shares "the" and "a" with item 301 ("within a week"), nothing with 302 or 303
    assert first["retrieved"] == [["301", 2.0]] and first["context"] == ["301"]
    prompt = chat_text(llm.seen[0])
    assert '"1" is the score for "The tuner stopped working within a week."' in prompt and "Good strap" not in prompt


def test_a_corpus_retriever_is_refused():
    class NeedsCorpus(SharedWords):
        needs_corpus = True

    with pytest.raises(InputError, match="each user's profile"):
        run_lamp(dataset(), Pipeline([NeedsCorpus(), LaMPGenerator(ScriptedLLM(default="1"))]), "unused", progress=False)


class FitsUsers(SharedWords):
    """Records the users it was fitted on, like the collaborative retriever's `fit_users`."""

    def fit_users(self, users):
        self.fitted = [u.id for u in users]
        return self


def test_a_retriever_over_other_users_is_fitted_on_the_whole_split(tmp_path):
    retriever = FitsUsers()
    run_lamp(dataset().head(1), Pipeline([retriever, LaMPGenerator(ScriptedLLM(default="1"))]), tmp_path / "a",
             users=dataset().users, progress=False)
    assert retriever.fitted == ["cara", "dan"]
    run_lamp(dataset().head(1), Pipeline([retriever, LaMPGenerator(ScriptedLLM(default="1"))]), tmp_path / "b", progress=False)
    assert retriever.fitted == ["cara"]


def test_eval_lamp_accepts_a_generator_object_that_takes_its_task_from_the_data():
    from personarag.commands.eval_lamp import build_generator
    from personarag.errors import InputError
    from personarag.generators.lamp import LaMPGenerator
    from personarag.testing import ScriptedLLM

    assert build_generator(LaMPGenerator(ScriptedLLM(default="4")), "LaMP-3").task is None
    with pytest.raises(InputError, match="set up for LaMP-2, but the run is for LaMP-3"):
        build_generator(LaMPGenerator(ScriptedLLM(default="4"), task="LaMP-2"), "LaMP-3")
