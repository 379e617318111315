"""UserStore on SQLite and PostgreSQL: every operation, idempotency, versions, deletion of
derived data, history order, schema versions, concurrent writers, bad input."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sqlalchemy")

from personarag.errors import InputError  # noqa: E402
from personarag.personal.store import SCHEMA_VERSION, UserStore, UserVector, content_hash  # noqa: E402
from personarag.types import Document, User  # noqa: E402
from tests.conftest import FIXTURES  # noqa: E402

LAMP3 = FIXTURES / "lamp" / "LaMP_3" / "dev_questions.json"


@pytest.fixture
def store(location):
    with UserStore(location) as opened:
        yield opened


def doc(item_id: str, text: str, date: str | None = None, **meta) -> Document:
    if date is not None:
        meta["date"] = date
    return Document(item_id, text, meta=meta)


def test_add_read_and_versions(store):
    versions = store.add_users([User("ann", (doc("1", "first review", "2020-01-01", score="4"),
                                            doc("2", "second review", "2021-05-02", score="2")))])
    assert versions == {"ann": 1}
    assert store.has_user("ann") and not store.has_user("bob")
    assert store.user_ids() == ["ann"] and len(store) == 1
    user = store.user("ann")
    assert [d.id for d in user.history] == ["2", "1"]
    assert user.history[0].meta == {"date": "2021-05-02", "score": "2"}
    # same items again: nothing changes, not even the version
    assert store.add_items("ann", [doc("1", "first review", "2020-01-01", score="4")]) == 1
    assert store.add_users([User("ann", (doc("2", "second review", "2021-05-02", score="2"),))]) == {"ann": 1}
    # a changed text is an update: one bump per call that changes something
    assert store.add_items("ann", [doc("1", "first review, edited", "2020-01-01", score="4"),
                                   doc("3", "third", "2019-12-31")]) == 2
    assert store.history_version("ann") == 2
    assert [d.text for d in store.user("ann").history] == ["second review", "first review, edited", "third"]
    # a changed field (not text) is a change too
    assert store.add_items("ann", [doc("3", "third", "2019-12-31", score="5")]) == 3
    assert store.delete_item("ann", "2") == 4
    assert [d.id for d in store.user("ann").history] == ["1", "3"]
    store.add_users([User("bob")])
    assert store.history_versions() == {"ann": 4, "bob": 0}
    user, version = store.user_and_version("ann")
    assert version == 4 and [d.id for d in user.history] == ["1", "3"]
    assert store.history_versions(["bob", "nobody"]) == {"bob": 0}


def test_add_items_creates_user_unless_told_not_to(store):
    assert store.add_items("new", [doc("a", "text")]) == 1
    with pytest.raises(InputError, match="unknown user 'other'"):
        store.add_items("other", [doc("a", "text")], create=False)
    assert store.add_users([User("empty")]) == {"empty": 0}
    assert store.user("empty").history == ()


def test_history_newest_first_undated_last_ties_newest_added_first(store):
    store.add_items("u", [doc("old", "a", "2019-01-01"), doc("undated1", "b"), doc("mid", "c", "2020-06"),
                          doc("tie1", "d", "2021-01-01"), doc("tie2", "e", "2021-01-01"), doc("undated2", "f")])
    assert [d.id for d in store.user("u").history] == ["tie2", "tie1", "mid", "old", "undated2", "undated1"]


def test_users_in_requested_order_and_unknown_user_errors(store):
    store.add_users([User("b", (doc("1", "x"),)), User("a", (doc("1", "y"),))])
    assert [u.id for u in store.users()] == ["a", "b"]
    assert [u.id for u in store.users(["b", "a"])] == ["b", "a"]
    for call in (lambda: store.user("zed"), lambda: store.history_version("zed"),
                 lambda: store.delete_user("zed"), lambda: store.delete_item("zed", "1"),
                 lambda: list(store.users(["a", "zed"]))):
        with pytest.raises(InputError, match="unknown user.*zed"):
            call()
    with pytest.raises(InputError, match="user 'a' has no item 'nope'"):
        store.delete_item("a", "nope")


def test_item_ids_are_per_user(store):
    """LaMP-5 co-authors share paper ids: the same id under two users is two independent items."""
    paper = doc("p1", "An abstract.", "2018-06", title="A Title")
    store.add_users([User("coauthor1", (paper,)), User("coauthor2", (paper,))])
    store.add_items("coauthor1", [doc("p1", "A corrected abstract.", "2018-06", title="A Title")])
    assert store.user("coauthor2").history[0].text == "An abstract."
    assert store.user("coauthor1").history[0].text == "A corrected abstract."
    assert store.history_version("coauthor2") == 1
    store.delete_item("coauthor1", "p1")
    assert [d.id for d in store.user("coauthor2").history] == ["p1"]


def test_changes_since(store):
    seq0, changed = store.changes_since(0)
    assert (seq0, changed) == (0, [])
    store.add_users([User("a", (doc("1", "x"),)), User("b", (doc("1", "y"),))])
    seq1, changed = store.changes_since(seq0)
    assert changed == ["a", "b"] and seq1 > seq0
    store.add_items("a", [doc("1", "x")])  # no change
    assert store.changes_since(seq1) == (seq1, [])
    store.add_items("b", [doc("2", "z")])
    seq2, changed = store.changes_since(seq1)
    assert changed == ["b"]
    store.delete_user("a")
    assert store.changes_since(seq2)[1] == ["a"]


def test_embeddings_cache_and_deletion_of_derived_data(store):
    shared_text, own_text = doc("1", "same review"), doc("2", "only ann wrote this")
    store.add_users([User("ann", (shared_text, own_text)), User("bob", (doc("9", "same review"),))])
    h_shared, h_own = content_hash(shared_text), content_hash(own_text)
    assert h_shared == content_hash(doc("9", "same review"))
    vectors = {h_shared: np.arange(4, dtype=np.float64), h_own: np.ones(4)}
    store.put_embeddings("minilm@abc", vectors)
    got = store.get_embeddings("minilm@abc", [h_shared, h_own, "missing"])
    assert set(got) == {h_shared, h_own}
    assert got[h_shared].dtype == np.float32 and got[h_shared].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert store.get_embeddings("other-model", [h_shared]) == {}  # never mixed across encoders
    store.put_embeddings("minilm@abc", {h_shared: np.zeros(4)})  # an existing key is kept
    assert store.get_embeddings("minilm@abc", [h_shared])[h_shared].tolist() == [0.0, 1.0, 2.0, 3.0]
    store.put_user_vectors("mean", {"ann": UserVector(np.ones(4), 2, 1), "bob": UserVector(np.zeros(4), 1, 1)})
    store.put_user_vectors("mean", {"ann": UserVector(np.full(4, 2.0), 2, 1)})  # replaces
    got_vectors = store.get_user_vectors("mean", ["ann", "bob", "nobody"])
    assert got_vectors["ann"].vector.tolist() == [2.0] * 4 and got_vectors["ann"].count == 2
    assert got_vectors["ann"].history_version == 1

    store.delete_user("ann")
    assert not store.has_user("ann")
    assert set(store.get_embeddings("minilm@abc", [h_shared, h_own])) == {h_shared}  # bob still has it
    assert set(store.get_user_vectors("mean", ["ann", "bob"])) == {"bob"}
    # an update that changes the content drops the embedding nobody has any more
    store.add_items("bob", [doc("9", "edited review")])
    assert store.get_embeddings("minilm@abc", [h_shared]) == {}


def test_put_user_vectors_refuses_unknown_users_and_bad_vectors(store):
    store.add_users([User("a")])
    with pytest.raises(InputError, match="unknown user"):
        store.put_user_vectors("mean", {"ghost": UserVector(np.ones(2), 1, 0)})
    with pytest.raises(InputError, match="NaN"):
        store.put_user_vectors("mean", {"a": UserVector(np.array([np.nan, 1.0]), 1, 0)})
    with pytest.raises(InputError, match="1-d"):
        store.put_embeddings("fp", {"h": np.ones((2, 2))})


def test_import_lamp_export_and_reimport(store, tmp_path, location):
    report = store.import_lamp(LAMP3, "LaMP-3", batch_size=1)
    raw = json.loads(LAMP3.read_text())
    assert report.users == len({r["user_id"] for r in raw}) == len(store)
    assert report.items_added == len({(r["user_id"], p["id"]) for r in raw for p in r["profile"]})
    again = store.import_lamp(LAMP3)  # the task from the LaMP_3 folder name
    assert (again.new_users, again.items_added, again.items_updated) == (0, 0, 0)
    assert again.items_unchanged == report.items_added
    out = tmp_path / "export.jsonl"
    assert store.export(out) == len(store)
    copy_path = tmp_path / "copy.db"
    with UserStore(copy_path) as copy:
        copy.import_jsonl(out)
        copy.export(tmp_path / "export2.jsonl")
        assert [u.history for u in copy.users()] == [u.history for u in store.users()]
        assert [[d.meta for d in u.history] for u in copy.users()] == [[d.meta for d in u.history] for u in store.users()]
    assert out.read_text() == (tmp_path / "export2.jsonl").read_text()


def test_shared_flag_round_trips(store):
    store.add_items("u", [doc("1", "private note", shared=False), doc("2", "public")])
    by_id = {d.id: d for d in store.user("u").history}
    assert by_id["1"].meta == {"shared": False} and by_id["2"].meta == {}


def test_bad_items(store):
    with pytest.raises(InputError, match="no text"):
        store.add_items("u", [doc("1", "   ")])
    with pytest.raises(InputError, match="date"):
        store.add_items("u", [doc("1", "x", date=2019)])  # type: ignore[arg-type]
    with pytest.raises(InputError, match="shared"):
        store.add_items("u", [doc("1", "x", shared="yes")])
    with pytest.raises(InputError, match="JSON"):
        store.add_items("u", [doc("1", "x", vector=np.ones(2))])
    with pytest.raises(InputError, match="appears twice"):
        store.add_items("u", [doc("1", "x"), doc("1", "y")])
    assert not store.has_user("u")  # nothing half-written


def test_null_fields_in_jsonl(tmp_path, store):
    good = {"user_id": "u", "history": [{"id": "1", "text": "x", "title": None, "meta": {"date": None, "k": None}}]}
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(good) + "\n")
    store.import_jsonl(path)
    item = store.user("u").history[0]
    assert item.title is None and item.meta == {"k": None}  # a null date or title is absent; other nulls kept
    for bad, message in (({"id": "1", "text": None}, "'text' must be a non-empty string"),
                         ({"id": None, "text": "x"}, "'id' must be a non-empty string")):
        path.write_text(json.dumps({"user_id": "u", "history": [bad]}) + "\n")
        with pytest.raises(InputError, match=rf"in.jsonl:1.*{message}"):
            store.import_jsonl(path)
    path.write_text(json.dumps({"user_id": None, "history": []}) + "\n")
    with pytest.raises(InputError, match="'user_id' must be a non-empty string"):
        store.import_jsonl(path)


def test_lamp_null_field_is_an_error(tmp_path, store):
    raw = json.loads(LAMP3.read_text())
    raw[0]["profile"][0]["text"] = None
    path = tmp_path / "LaMP_3" / "dev_questions.json"
    path.parent.mkdir()
    path.write_text(json.dumps(raw))
    with pytest.raises(InputError, match="'text' is null"):
        store.import_lamp(path)
    assert len(store) == 0


# -- locations and schema -------------------------------------------------------------------
def test_sqlite_location_forms(tmp_path):
    with UserStore(f"sqlite:///{tmp_path / 'a.db'}") as a:
        a.add_items("u", [doc("1", "x")])
        assert a.url == f"sqlite:///{tmp_path / 'a.db'}"
    with UserStore(tmp_path / "a.db") as b:
        assert b.user_ids() == ["u"]
    mode = sqlite3.connect(tmp_path / "a.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_schema_version_mismatch(tmp_path):
    path = tmp_path / "old.db"
    UserStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE pr_meta SET value = '0' WHERE key = 'schema_version'")
    with pytest.raises(InputError) as error:
        UserStore(path)
    message = str(error.value)
    assert "schema version 0" in message and f"schema version {SCHEMA_VERSION}" in message and str(path) in message


def test_schema_version_mismatch_postgres(postgres_server):
    import psycopg

    from tests.postgres import create_database

    url = create_database(postgres_server)
    UserStore(url).close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE pr_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(InputError, match=f"schema version 99.*schema version {SCHEMA_VERSION}"):
        UserStore(url)


def test_not_a_store(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE things (x)")
    with pytest.raises(InputError, match="not a personarag user store"):
        UserStore(path)
    text = tmp_path / "notes.db"
    text.write_text("just some text, not a database " * 50)
    with pytest.raises(InputError, match=f"cannot open the SQLite user store at {text}"):
        UserStore(text)


def test_bad_locations(tmp_path):
    with pytest.raises(InputError, match=f"store path {tmp_path} is a directory"):
        UserStore(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        UserStore(tmp_path / "missing" / "u.db")
    with pytest.raises(InputError, match="unsupported backend 'mysql'"):
        UserStore("mysql://u:secret@h/db")
    with pytest.raises(InputError, match="in-memory"):
        UserStore(":memory:")


def test_unreachable_postgres_names_host_and_database_not_password():
    pytest.importorskip("psycopg")
    from tests.postgres import _free_port

    port = _free_port()  # nothing listens there
    with pytest.raises(InputError) as error:
        UserStore(f"postgresql://alice:s3cretpw@127.0.0.1:{port}/userdb")
    message = str(error.value)
    assert "'userdb'" in message and f"127.0.0.1:{port}" in message and "alice" in message
    assert "s3cretpw" not in message and "s3cretpw" not in repr(error.value.__cause__)


def _write_store(location: str, user: str, n: int) -> None:
    with UserStore(location) as store:
        for i in range(n):
            store.add_items(user, [doc(f"{user}-{i}", f"item {i} of {user}")])
            store.add_items("common", [doc(f"{user}-{i}", f"common item {i} from {user}")])


def test_two_processes_writing_at_once_lose_nothing(location):
    UserStore(location).close()
    n = 40
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_store, args=(location, name, n)) for name in ("p", "q")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    with UserStore(location) as store:
        assert len(store.user("p").history) == len(store.user("q").history) == n
        assert len(store.user("common").history) == 2 * n
        assert store.history_version("common") == 2 * n
        assert store.changes_since(0)[0] == 4 * n


def test_import_personarag_and_the_store_module_stay_free_of_sqlalchemy():
    import subprocess
    import sys

    code = ("import sys, personarag, personarag.personal.store;"
            "print(','.join(m for m in ('sqlalchemy', 'psycopg') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def _open_error(path: Path) -> str:
    """The InputError UserStore(path) raises, as a user who cannot write there: as root (who may
    write anywhere) the check runs in a forked child that dropped to uid/gid 65534 (nobody)."""
    import os

    if os.geteuid() != 0:
        with pytest.raises(InputError) as error:
            UserStore(path)
        return str(error.value)
    UserStore(path.parent.parent / "warm.db").close()  # load every module the child needs before dropping root
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report the message through the pipe, never return into pytest
        message = "no error"
        try:
            os.setgid(65534)
            os.setuid(65534)
            UserStore(path)
        except InputError as error:
            message = str(error)
        except BaseException as error:  # noqa: BLE001 - reported to the parent
            message = f"unexpected {type(error).__name__}: {error}"
        finally:
            os.write(write, message.encode())
            os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 4096):
        chunks.append(chunk)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode()


@pytest.fixture
def open_tmp_path():
    """A temp folder every user can enter (pytest's own tmp_path is private to its owner)."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="personarag-store-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_read_only_store_file_and_folder(open_tmp_path):
    tmp_path = open_tmp_path
    folder = tmp_path / "ro"
    folder.mkdir()
    with UserStore(folder / "users.db") as store:
        store.add_items("u", [doc("1", "x")])
    (folder / "users.db").chmod(0o444)
    assert _open_error(folder / "users.db") == f"store path {folder / 'users.db'} is read-only (the store needs read and write access)"
    folder.chmod(0o555)
    (folder / "users.db").chmod(0o644)
    try:
        message = _open_error(folder / "new.db")
    finally:
        folder.chmod(0o755)
    assert message.startswith(f"store path {folder / 'new.db'}: folder {folder} is read-only")


def _lamp_file(path: Path, users: int, items: int) -> Path:
    records = [{"id": f"q{u}", "user_id": f"user{u:04d}", "input": f"rate review {u}",
                "profile": [{"id": f"{u}-{i}", "text": f"review {i} by user {u}: " + "words " * (i % 7),
                             "score": str(1 + (u + i) % 5), "date": f"20{10 + i % 10}-0{1 + i % 9}-1{i % 10}"}
                            for i in range(items)]}
               for u in range(users)]
    path.write_text(json.dumps(records))
    return path


def _cli(*args: str):
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "personarag.cli", "users", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_during_import_then_rerun_equals_uninterrupted_import(location, tmp_path):
    import os
    import signal
    import time

    n_users = 400
    data = _lamp_file(tmp_path / "questions.json", n_users, 25)
    args = ["--task", "LaMP-3", "--batch-size", "4", str(data)]
    killed_at = 0
    with UserStore(location) as store:
        process = _cli("import", "--store", location, *args)
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            killed_at = len(store)
            if killed_at >= 40:
                os.kill(process.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
        process.wait(30)
        assert process.returncode == -signal.SIGKILL, process.stderr.read()[-2000:]
        committed = len(store)
        assert 40 <= killed_at <= committed < n_users  # killed mid-way, with users committed
        assert committed % 4 == 0  # whole batches only
        rerun = _cli("import", "--store", location, *args)
        out, err = rerun.communicate(timeout=120)
        assert rerun.returncode == 0, err
        assert f"{n_users} users ({n_users - committed} new)" in out
        store.export(tmp_path / "resumed.jsonl")
        resumed_versions = {u: store.history_version(u) for u in store.user_ids()}
        resumed_changes = store.changes_since(0)[1]
    reference = str(tmp_path / "reference.db")
    done = _cli("import", "--store", reference, *args)
    assert done.wait(120) == 0
    with UserStore(reference) as clean:
        clean.export(tmp_path / "reference.jsonl")
        assert {u: clean.history_version(u) for u in clean.user_ids()} == resumed_versions
        assert clean.changes_since(0)[1] == resumed_changes
    assert (tmp_path / "resumed.jsonl").read_text() == (tmp_path / "reference.jsonl").read_text()
    assert len((tmp_path / "reference.jsonl").read_text().splitlines()) == n_users


def test_cli_users_commands(tmp_path, capsys, monkeypatch):
    from personarag.cli import main

    db = str(tmp_path / "cli.db")
    assert main(["users", "import", "--store", db, "--task", "LaMP-3", str(LAMP3)]) == 0
    assert "2 users (2 new), items: 5 added" in capsys.readouterr().out
    assert main(["users", "add-item", "--store", db, "--user", "cara", "--id", "n1", "--text", "Lovely tone.",
                 "--date", "2024-01-01", "--field", "score=5", "--private"]) == 0
    assert capsys.readouterr().out.strip() == "user 'cara': history version 2"
    monkeypatch.setenv("PERSONARAG_STORE", db)
    assert main(["users", "show", "--user", "cara", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["history_version"] == 2 and shown["history"][0] == {
        "id": "n1", "text": "Lovely tone.", "title": None, "meta": {"score": "5", "date": "2024-01-01", "shared": False}}
    assert main(["users", "share", "--user", "dan", "off"]) == 0
    capsys.readouterr()
    assert main(["users", "show", "--json"]) == 0
    assert [(u["user_id"], u["shared"]) for u in json.loads(capsys.readouterr().out)] == [("cara", True), ("dan", False)]
    assert main(["users", "delete", "--user", "cara", "--item", "n1"]) == 0
    assert main(["users", "delete", "--user", "dan"]) == 0
    assert main(["users", "export", str(tmp_path / "out.jsonl")]) == 0
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert [json.loads(line)["user_id"] for line in lines] == ["cara"]
    capsys.readouterr()
    assert main(["users", "delete", "--user", "dan"]) == 2
    assert "unknown user 'dan'" in capsys.readouterr().err
    monkeypatch.delenv("PERSONARAG_STORE")
    assert main(["users", "show"]) == 2
    assert "no user store given" in capsys.readouterr().err


def _open_and_add(location: str, user: str) -> None:
    with UserStore(location) as store:
        store.add_items(user, [doc("1", f"first item of {user}")])


def test_processes_creating_a_fresh_store_at_once(location):
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_open_and_add, args=(location, f"u{i}")) for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0] * 4
    with UserStore(location) as store:
        assert store.user_ids() == ["u0", "u1", "u2", "u3"]


def test_forked_child_uses_its_own_connections(tmp_path):
    with UserStore(tmp_path / "fork.db") as store:
        store.add_items("parent", [doc("1", "x")])  # the pool now holds a connection
        child = multiprocessing.get_context("fork").Process(target=store.add_items, args=("child", [doc("1", "y")]))
        child.start()
        child.join(60)
        assert child.exitcode == 0
        store.add_items("parent", [doc("2", "z")])
        assert store.user_ids() == ["child", "parent"] and store.history_version("parent") == 2


def test_ids_order_the_same_on_every_backend(store):
    ids = ["b", "B", "_x", "Zed", "a-1", "a1", "ä", "10", "9"]
    store.add_users([User(i, (doc("1", "x"),)) for i in ids])
    assert store.user_ids() == sorted(ids) == [u.id for u in store.users()]
    assert store.changes_since(0)[1] == sorted(ids)


def test_dates_order_by_moment_not_text(store):
    store.add_items("u", [doc("a", "x", "2019-10-01"), doc("b", "y", "2019-3-5"), doc("c", "z", "2019-12"),
                          doc("d", "w", "2019-10-01T09:30"), doc("e", "v", "2019-10-01T12:00+05:00"),
                          doc("f", "u", "2019-01"), doc("g", "t", "2019-1-1")])
    # 12:00+05:00 is 07:00 UTC; "2019-01" and "2019-1-1" are the same moment: newest-added first
    assert [d.id for d in store.user("u").history] == ["c", "d", "e", "a", "b", "g", "f"]
    assert store.user("u").history[-1].meta == {"date": "2019-01"}  # the date as given
    store.add_items("u", [doc("b", "y", "2020-01-01")])  # a changed date moves the item
    assert store.user("u").history[0].id == "b"
    with pytest.raises(InputError, match=r"item 'h'.*date '03/05/2021' is not a date"):
        store.add_items("u", [doc("h", "s", "03/05/2021")])


def test_private_users_round_trip_and_fresh_user_vectors(store, tmp_path):
    store.add_users([User("ann", (doc("1", "x"),)), User("bob", (doc("1", "y"),))])
    seq, _ = store.changes_since(0)
    store.set_user_shared("bob", False)
    assert store.private_user_ids() == {"bob"}
    assert store.changes_since(seq)[1] == ["bob"] and store.history_version("bob") == 1
    with pytest.raises(InputError, match="unknown user 'zed'"):
        store.set_user_shared("zed", False)
    store.export(tmp_path / "out.jsonl")
    assert json.loads((tmp_path / "out.jsonl").read_text().splitlines()[1])["shared"] is False
    with UserStore(tmp_path / "copy.db") as copy:
        copy.import_jsonl(tmp_path / "out.jsonl")
        assert copy.private_user_ids() == {"bob"}
    store.set_user_shared("bob", True)
    assert store.private_user_ids() == set()

    store.put_user_vectors("mean", {"ann": UserVector(np.ones(2), 1, 1), "bob": UserVector(np.ones(2), 1, 1)})
    store.add_items("ann", [doc("2", "new item")])  # ann's vector is now stale
    assert set(store.get_user_vectors("mean", ["ann", "bob"], fresh=True)) == {"bob"}
    assert set(store.get_user_vectors("mean", ["ann", "bob"])) == {"ann", "bob"}


def test_postgres_missing_database_and_masked_password(postgres_server):
    missing = postgres_server.replace("postgresql://pg@", "postgresql://pg:hunter22@") + "/no_such_db"
    with pytest.raises(InputError) as error:
        UserStore(missing)
    message = str(error.value)
    assert "database 'no_such_db' on host 127.0.0.1" in message and "hunter22" not in message
    from tests.postgres import create_database

    url = create_database(postgres_server).replace("postgresql://pg@", "postgresql://pg:hunter22@")
    with UserStore(url) as store:  # the throwaway cluster trusts every password
        assert store.url.startswith("postgresql://pg:***@127.0.0.1:") and "hunter22" not in repr(store)


def test_iterating_all_users_skips_one_deleted_meanwhile(store, location, monkeypatch):
    import personarag.personal.store_schema as schema

    monkeypatch.setattr(schema, "CHUNK", 1)  # one user per read, so the deletion falls between reads
    store.add_users([User(f"u{i}", (doc("1", f"text {i}"),)) for i in range(3)])
    seen = []
    for user in store.users():
        seen.append(user.id)
        if user.id == "u0":
            with UserStore(location) as other:
                other.delete_user("u2")
    assert seen == ["u0", "u1"]
    with pytest.raises(InputError, match="unknown user"):
        list(store.users(["u1", "u2"]))
