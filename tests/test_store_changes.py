"""The user store's change log compacted on SQLite and PostgreSQL: what is dropped, the
watermark, the sequence never restarting, consumers behind the watermark told to re-read, and a
bound collaborative retriever that keeps following the store across compactions."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("sqlalchemy")

from test_collaborative import HashEncoder, make_users  # noqa: E402

from personarag.errors import InputError  # noqa: E402
from personarag.personal.collaborative import CollaborativeRetriever  # noqa: E402
from personarag.personal.store import ChangesCompacted, UserStore  # noqa: E402
from personarag.types import Document, Query, User  # noqa: E402


@pytest.fixture
def store(location):
    with UserStore(location) as opened:
        yield opened


def rows(store: UserStore) -> int:
    return store.compact_changes(0).remaining  # through 0 drops nothing


def test_compaction_drops_rows_through_the_watermark_and_keeps_the_sequence(store):
    for i in range(5):
        store.add_items(f"u{i}", [Document("a", f"text {i}")])
    seq = store.change_sequence()
    assert seq == 5 and rows(store) == 5 and store.change_floor() == 0
    report = store.compact_changes(2)
    assert (report.dropped, report.floor, report.sequence, report.remaining) == (2, 2, 5, 3)
    assert store.changes_since(2) == (5, ["u2", "u3", "u4"])
    with pytest.raises(ChangesCompacted, match="compacted through sequence 2") as behind:
        store.changes_since(1)
    assert behind.value.floor == 2 and isinstance(behind.value, InputError)
    # keep: the newest N changes survive a full compaction; the newest row always does
    assert store.compact_changes(keep=2).floor == 3 and rows(store) == 2
    assert store.compact_changes().floor == 5 and rows(store) == 1
    assert store.compact_changes().dropped == 0  # nothing more to drop
    # the sequence goes on from where it was (SQLite would reuse numbers of an empty table)
    store.add_items("u0", [Document("b", "more")])
    assert store.change_sequence() == 6 and store.changes_since(5) == (6, ["u0"])
    store.delete_user("u1")
    assert store.changes_since(5) == (7, ["u0", "u1"])
    with pytest.raises(InputError, match="past the newest change"):
        store.compact_changes(99)
    with pytest.raises(InputError, match="keep must be an integer"):
        store.compact_changes(keep=-1)
    with pytest.raises(InputError, match="sequence number >= 0"):
        store.changes_since(-1)


def test_a_bound_retriever_keeps_following_the_store_across_compactions(location):
    users = make_users()
    store = UserStore(location)
    store.add_users(users)
    retriever = CollaborativeRetriever("hash", encoder=HashEncoder(), m=2, store=store)
    asker = users[0]
    q = Query("q", "guitar strings", user=asker)
    retriever.retrieve(q, k=3)
    # changes after the retriever's position, then compacted away before it syncs
    twin = User("twin", tuple(Document(f"t{i}", d.text) for i, d in enumerate(asker.history)))
    store.add_users([twin])
    store.delete_user(users[1].id)
    store.compact_changes()
    assert store.change_floor() > retriever._seq
    ranking = retriever.retrieve(q, k=100)[0]
    similar = [uid for uid, _ in ranking.trace[-1].info["similar_users"]]
    assert similar[0] == "twin" and users[1].id not in similar
    assert not {d.id for d in users[1].history} & set(ranking.ids)
    # compaction that the retriever is not behind changes nothing for it
    store.add_items("twin", [Document("t9", "guitar strings chord")])
    retriever.sync()
    store.compact_changes(store.change_sequence())
    store.add_items("twin", [Document("t10", "guitar strings pedal")])
    assert retriever.sync() == ["twin"]
    assert "t10" in retriever.retrieve(q, k=100)[0].ids
    store.close()


def test_cli_users_compact(tmp_path, capsys):
    from personarag.cli import main

    db = str(tmp_path / "u.db")
    with UserStore(db) as store:
        for i in range(4):
            store.add_items(f"u{i}", [Document("a", "text")])
    assert main(["users", "compact", "--store", db, "--keep", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"dropped": 3, "floor": 3, "sequence": 4, "remaining": 1}
    assert main(["users", "compact", "--store", db]) == 0
    assert "dropped 0 change-log rows" in capsys.readouterr().out
