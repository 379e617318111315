"""User summaries (issue 12 item 3): stored with the history version they were made from,
rewritten exactly when that version (or what writes them) changes, on SQLite and PostgreSQL;
and put at the head of LaMP and RAG prompts under the token budget."""

from __future__ import annotations

import sqlite3

import pytest

pytest.importorskip("sqlalchemy")

from personarag import InputError, Pipeline  # noqa: E402
from personarag.cli import main  # noqa: E402
from personarag.generators.lamp import LaMPGenerator  # noqa: E402
from personarag.generators.rag import RAGGenerator  # noqa: E402
from personarag.personal.store import SCHEMA_VERSION, Summary, UserStore  # noqa: E402
from personarag.personal.summaries import Summarizer, summarize_users  # noqa: E402
from personarag.testing import ScriptedLLM  # noqa: E402
from personarag.testing.scripted import chat_text  # noqa: E402
from personarag.types import Document, Query, Ranking, ScoredDoc, User  # noqa: E402

QUESTION = "What is the score of the following review on a scale of 1 to 5? just answer with 1, 2, 3, 4, or 5 without further explanation. review: "


def review(item_id: str, text: str, score: int, date: str) -> Document:
    return Document(item_id, text, meta={"score": str(score), "date": date})


def seed(store: UserStore) -> None:
    store.add_items("ann", [review("a1", "Strings broke in a day.", 1, "2024-01-01"), review("a2", "Lovely warm tone.", 5, "2024-02-01")])
    store.add_items("bob", [review("b1", "Does the job.", 3, "2024-01-05")])
    store.add_users([User("cid", ())])


@pytest.fixture
def store(location):
    with UserStore(location) as opened:
        seed(opened)
        yield opened


def writer() -> ScriptedLLM:
    """Summarises by counting the history lines of the prompt, so a new item shows in the text."""
    return ScriptedLLM(lambda chat: f"{chat_text(chat).count(chr(10) + '- score')} reviews, mostly positive.")


def test_summaries_are_rewritten_exactly_when_the_history_version_changes(store):
    llm = writer()
    first = summarize_users(store, llm, "LaMP-3", label_stats=True)
    assert (first.users, first.written, first.up_to_date, first.empty) == (3, 3, 0, 1)
    assert llm.calls == 2  # cid has no history: an empty summary, no LLM call
    ann = store.summary("ann", "LaMP-3")
    stats = "Scores this user gave, most frequent first: 5 (1), 1 (1); mean 3.0."  # exact, not the model's
    assert ann == Summary("ann", "LaMP-3", stats + " 2 reviews, mostly positive.", 1, Summarizer(llm, "LaMP-3", label_stats=True).fingerprint)
    assert ann.fingerprint.startswith("scripted@")
    assert store.summary("cid", "LaMP-3").text == "" and store.summary("ann", "LaMP-2") is None
    prompt = chat_text(llm.seen[0])
    assert "- score 5: Lovely warm tone.\n- score 1: Strings broke in a day." in prompt  # newest first

    again = summarize_users(store, llm, "LaMP-3", label_stats=True)
    assert (again.written, again.up_to_date, llm.calls) == (0, 3, 2)

    store.add_items("ann", [review("a3", "Great pedal.", 5, "2024-03-01")])
    store.add_items("bob", [review("b1", "Does the job.", 3, "2024-01-05")])  # unchanged item: version stays
    assert store.summaries("LaMP-3", fresh=True).keys() == {"bob", "cid"}
    third = summarize_users(store, llm, "LaMP-3", label_stats=True)
    assert (third.written, third.up_to_date, llm.calls) == (1, 2, 3)
    assert store.summary("ann", "LaMP-3") == Summary(
        "ann", "LaMP-3", "Scores this user gave, most frequent first: 5 (2), 1 (1); mean 3.7. 3 reviews, mostly positive.", 2, ann.fingerprint)

    # another writer (here: fewer history items per prompt) is another fingerprint: everything is redone
    fourth = summarize_users(store, llm, "LaMP-3", max_items=1, label_stats=False)
    assert (fourth.written, llm.calls) == (3, 5)
    assert store.summary("ann", "LaMP-3").text == "1 reviews, mostly positive."
    assert store.summary("ann", "LaMP-3").fingerprint != ann.fingerprint


def test_repeated_summaries_come_from_the_llm_cache(store, tmp_path):
    first = ScriptedLLM(default="Likes warm tones.", cache_dir=str(tmp_path / "cache"))
    summarize_users(store, first, "LaMP-3")
    second = ScriptedLLM(default="Likes warm tones.", cache_dir=str(tmp_path / "cache"))
    report = summarize_users(store, second, "LaMP-3", force=True)
    assert report.written == 3 and second.calls == 0 and first.calls == 2


def test_put_summary_checks_users_and_versions_and_delete_removes_it(store):
    store.put_summary("bob", "general", "Plays bass.", history_version=1, fingerprint="m@1")
    assert store.summary("bob", "general") == Summary("bob", "general", "Plays bass.", 1, "m@1")
    store.put_summary("bob", "general", "Plays guitar.", history_version=0, fingerprint="m@2")  # replaces
    assert store.summaries("general") == {"bob": Summary("bob", "general", "Plays guitar.", 0, "m@2")}
    assert store.summaries("general", fresh=True) == {}
    with pytest.raises(InputError, match="unknown user.*'zed'"):
        store.put_summary("zed", "general", "x", history_version=0, fingerprint="m")
    with pytest.raises(InputError, match=r"newer than the user's: 'bob' \(summary 5, history 1\)"):
        store.put_summary("bob", "general", "x", history_version=5, fingerprint="m")
    with pytest.raises(InputError, match="fingerprint must be a non-empty string"):
        store.put_summary("bob", "general", "x", history_version=1, fingerprint="")
    store.delete_user("bob")
    assert store.summaries("general") == {}


def test_a_version_1_store_gains_the_summaries_table_on_open(tmp_path):
    path = tmp_path / "old.db"
    UserStore(path).close()
    with sqlite3.connect(path) as conn:  # what a store written before summaries looks like
        conn.execute("DROP TABLE pr_summaries")
        conn.execute("UPDATE pr_meta SET value = '1' WHERE key = 'schema_version'")
    with UserStore(path) as store:
        store.add_items("ann", [review("a1", "Fine.", 4, "2024-01-01")])
        store.put_summary("ann", "general", "ok", history_version=1, fingerprint="m")
        assert store.summary("ann", "general").text == "ok"
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM pr_meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)


# ---- in prompts -----------------------------------------------------------------------------
def lamp_ranking(store: UserStore, user_id: str, qid: str, items: int) -> Ranking:
    user = store.user(user_id)
    query = Query(qid, QUESTION + "Works well, a bit loud.", user=user, meta={"task": "LaMP-3"})
    return Ranking(query, [ScoredDoc(d, 1.0 / (i + 1)) for i, d in enumerate(user.history[:items])])


def test_the_lamp_prompt_holds_the_summary_alone_or_with_items_under_the_budget(tmp_path):
    with UserStore(tmp_path / "u.db") as store:
        long_history = [review(f"r{i}", " ".join(f"w{i}x{j}" for j in range(30)), 1 + i % 5, f"2024-01-{i + 1:02d}") for i in range(6)]
        store.add_items("ann", long_history)
        summary = " ".join(f"s{j}" for j in range(300))
        store.put_summary("ann", "LaMP-3", summary, history_version=1, fingerprint="m@1")
        llm = ScriptedLLM(scores={str(r): -float(r) for r in range(1, 6)})
        alone = LaMPGenerator(llm, task="LaMP-3", answer_mode="choose", summary=True, store=store, summary_tokens=40,
                              max_prompt_tokens=120).generate([lamp_ranking(store, "ann", "q1", 0)])[0]
        assert alone.prompt.startswith("About this user: s0 s1 s2 ") and " s39\n" + QUESTION in alone.prompt
        assert "s40" not in alone.prompt
        assert alone.trace[-1].info["summary"] == {"kind": "LaMP-3", "history_version": 1, "fingerprint": "m@1", "truncated": True}
        assert alone.trace[-1].problems == ()

        both = LaMPGenerator(llm, task="LaMP-3", answer_mode="choose", summary=True, store=store, summary_tokens=40,
                             max_prompt_tokens=120).generate([lamp_ranking(store, "ann", "q2", 6)])[0]
        without = LaMPGenerator(llm, task="LaMP-3", answer_mode="choose", max_prompt_tokens=120).generate(
            [lamp_ranking(store, "ann", "q3", 6)])[0]
        assert len(both.prompt.split()) == 118 and len(without.prompt.split()) == 116  # budget 120 (words here)
        assert both.prompt.startswith("About this user: s0 ") and " s39\n\"1\" is the score for \"w5x0" in both.prompt
        # the summary's 43 words come out of the items' share: 2 items fit instead of 4
        assert [d.doc.id for d in both.context] == ["r5", "r4"]
        assert [d.doc.id for d in without.context] == ["r5", "r4", "r3", "r2"]
        assert both.trace[-1].problems == ("4 of 6 items dropped to fit 120 tokens",)


def test_a_pipeline_given_an_opened_store_saves_a_config_that_names_it(tmp_path):
    from personarag.pipeline import Pipeline

    with UserStore(tmp_path / "u.db") as store:
        generator = LaMPGenerator(ScriptedLLM(default="3"), task="LaMP-3", summary=True, store=store)
        pipeline = Pipeline(["history:bm25", generator])
        saved = pipeline.config()
        assert saved["stages"][1]["params"]["store"] == store.url == f"sqlite:///{tmp_path / 'u.db'}"
        rebuilt = Pipeline.from_config(saved)  # the URL opens the same store
        assert rebuilt.config() == saved


def test_missing_or_stale_summaries_are_reported(tmp_path):
    with UserStore(tmp_path / "u.db") as store:
        seed(store)
        store.put_summary("ann", "LaMP-3", "Rates harshly.", history_version=1, fingerprint="m@1")
        store.add_items("ann", [review("a9", "Meh.", 2, "2024-05-01")])
        generator = LaMPGenerator(ScriptedLLM(default="3"), task="LaMP-3", summary=True)
        Pipeline([generator]).fit(store=store)
        stale, missing = generator.generate([lamp_ranking(store, "ann", "q1", 0), lamp_ranking(store, "bob", "q2", 0)])
        assert stale.prompt.startswith("About this user: Rates harshly.\n")
        assert any("stale (history version 1, now 2)" in p for p in stale.trace[-1].problems)
        assert not missing.prompt.startswith("About this user")
        assert any("no LaMP-3 summary for user 'bob'" in p for p in missing.trace[-1].problems)
    with pytest.raises(InputError, match="reads summaries from a user store"):
        Pipeline([LaMPGenerator(ScriptedLLM(default="3"), task="LaMP-3", summary=True)]).fit(users=[])
    Pipeline([LaMPGenerator(ScriptedLLM(default="3"), task="LaMP-3")]).fit(users=[])  # without summary: nothing to bind
    with pytest.raises(InputError, match="summary must be True, False or a summary kind"):
        LaMPGenerator(ScriptedLLM(default="3"), task="LaMP-3", summary="")


def test_the_rag_prompt_holds_the_general_summary(tmp_path):
    with UserStore(tmp_path / "u.db") as store:
        seed(store)
        store.put_summary("bob", "general", "A bass player.", history_version=1, fingerprint="m@1")
        generator = RAGGenerator(ScriptedLLM(default="Yes."), summary=True, store=str(tmp_path / "u.db"))
        query = Query("q", "Which strings?", user=store.user("bob"))
        [out] = generator.generate([Ranking(query, [ScoredDoc(Document("d", "Flatwound strings are smooth."), 1.0)])])
        assert out.prompt.startswith("About this user: A bass player.\nAnswer the question using the passages below.")
        assert "[1] Flatwound strings are smooth." in out.prompt
        assert generator.config()["params"]["store"] == str(tmp_path / "u.db")


def test_the_summarize_command_writes_and_resumes(tmp_path, capsys):
    path = tmp_path / "u.db"
    with UserStore(path) as store:
        seed(store)
    command = ["users", "summarize", str(path), "--llm", "scripted", "--llm-option", "default=Likes warm tones.", "--task", "LaMP-3",
               "--label-stats"]
    assert main(command) == 0
    assert "3 summaries written (1 of empty histories), 0 up to date, of 3 users" in capsys.readouterr().out
    assert main(command) == 0
    assert "0 summaries written (0 of empty histories), 3 up to date, of 3 users" in capsys.readouterr().out
    with UserStore(path) as store:
        assert store.summary("bob", "LaMP-3").text == "Scores this user gave, most frequent first: 3 (1); mean 3.0. Likes warm tones."
