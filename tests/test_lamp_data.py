"""LaMP loader: the official layout, task names, users, errors, and the download path."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from pathlib import Path

import pytest

from conftest import FIXTURES, shared_data
from personarag import InputError, UnknownSpecError
from personarag.evaluation.lamp import download_lamp, lamp_urls, load_lamp, load_lamp_split
from personarag.evaluation.lamp_tasks import TASKS, task_name

LAMP = FIXTURES / "lamp"


def fixture(task_dir: str) -> tuple[Path, Path]:
    return LAMP / task_dir / "dev_questions.json", LAMP / task_dir / "dev_outputs.json"


@pytest.mark.parametrize("name", ["LaMP-3", "LaMP_3", "lamp3", "lamp-3", "LAMP 3"])
def test_task_names_are_normalised(name):
    assert task_name(name) == "LaMP-3"


def test_unknown_task_lists_valid_ones():
    with pytest.raises(UnknownSpecError) as info:
        task_name("LaMP-8")
    assert "LaMP-1" in str(info.value) and "LaMP-7" in str(info.value)


@pytest.mark.parametrize("number", range(1, 8))
def test_every_task_fixture_loads(number):
    data = load_lamp(f"lamp{number}", *fixture(f"LaMP_{number}"))
    assert data.task == f"LaMP-{number}"
    assert len(data) >= 1
    for example in data:
        assert example.gold
        assert example.query.user.history
        for doc in example.query.user.history:
            for field in TASKS[data.task].profile_fields:
                assert field in doc.meta


def test_lamp3_examples_become_queries_with_user_histories():
    data = load_lamp("LaMP-3", *fixture("LaMP_3"))
    assert [e.id for e in data] == ["3-1", "3-2", "3-3"]
    first = data.examples[0].query
    assert first.text.endswith("Not buying again.")
    assert first.user.id == "cara"
    assert [d.id for d in first.user.history] == ["301", "302", "303"]
    assert first.user.history[0].text == "The tuner stopped working within a week."
    assert first.user.history[0].meta == {"text": "The tuner stopped working within a week.", "score": "1", "date": "2013-01-02"}
    assert data.golds == {"3-1": "1", "3-2": "5", "3-3": "3"}
    assert [u.id for u in data.users] == ["cara", "dan"]
    assert data.examples[1].query.user.history[0].meta["score"] == 5  # an int score is kept as given


def test_title_tasks_put_the_title_on_the_document():
    doc = load_lamp("LaMP-5", *fixture("LaMP_5")).examples[0].query.user.history[0]
    assert (doc.title, doc.text) == ("Personal Knowledge for Dialogue Agents", "We ground dialogue responses in a user's stored facts.")
    assert doc.meta["date"] == "2021-05"
    tag_doc = load_lamp("LaMP-2", *fixture("LaMP_2")).examples[0].query.user.history[0]
    assert tag_doc.title is None and tag_doc.meta["tag"] == "sci-fi"


def test_users_without_user_id_are_identified_by_their_profile():
    data = load_lamp("LaMP-1", *fixture("LaMP_1"))
    ids = [e.query.user.id for e in data]
    assert ids[0] == ids[1]  # same profile items -> same user
    assert ids[2] != ids[0]
    assert len(data.users) == 2
    assert "date" not in data.examples[2].query.user.history[0].meta


def test_test_split_without_outputs_has_no_golds():
    data = load_lamp("LaMP-4", LAMP / "LaMP_4" / "dev_questions.json")
    assert [e.gold for e in data] == [None, None] and data.golds == {}


def test_head_keeps_the_first_examples():
    assert [e.id for e in load_lamp("LaMP-3", *fixture("LaMP_3")).head(2)] == ["3-1", "3-2"]


def _write(tmp_path, questions, outputs=None, name="q.json"):
    q = tmp_path / name
    q.write_text(json.dumps(questions) if not isinstance(questions, str) else questions)
    o = None
    if outputs is not None:
        o = tmp_path / ("o_" + name)
        o.write_text(json.dumps(outputs))
    return q, o


def test_profile_item_missing_a_task_field_names_example_item_and_field(tmp_path):
    q, _ = _write(tmp_path, [{"id": "x1", "input": "rate it", "profile": [
        {"id": "a", "text": "t", "score": "3"}, {"id": "b", "text": "no score here"}]}])
    with pytest.raises(InputError) as info:
        load_lamp("LaMP-3", q)
    message = str(info.value)
    assert "'x1'" in message and "profile item 1" in message and "'score'" in message


def test_mismatched_ids_list_some_of_each_side(tmp_path):
    questions = [{"id": f"q{i}", "input": "rate it", "profile": []} for i in range(3)]
    outputs = {"task": "LaMP_3", "golds": [{"id": "q0", "output": "1"}, {"id": "zz", "output": "2"}]}
    q, o = _write(tmp_path, questions, outputs)
    with pytest.raises(InputError) as info:
        load_lamp("LaMP-3", q, o)
    message = str(info.value)
    assert "2 question ids have no gold" in message and "q1, q2" in message
    assert "1 gold ids have no question" in message and "zz" in message


def test_outputs_for_another_task_are_refused(tmp_path):
    q, o = _write(tmp_path, [{"id": "q0", "input": "x", "profile": []}], {"task": "LaMP_5", "golds": [{"id": "q0", "output": "t"}]})
    with pytest.raises(InputError, match="LaMP_5"):
        load_lamp("LaMP-3", q, o)


def test_malformed_json_names_the_file(tmp_path):
    q, _ = _write(tmp_path, '[{"id": "q0", "input": ', name="broken.json")
    with pytest.raises(InputError, match=r"broken\.json: not valid JSON"):
        load_lamp("LaMP-3", q)
    with pytest.raises(InputError, match="expected a JSON list"):
        load_lamp("LaMP-3", _write(tmp_path, {"id": 1}, name="obj.json")[0])


def test_official_urls_for_user_and_time_splits():
    assert lamp_urls("LaMP-1", "train") == (
        "https://ciir.cs.umass.edu/downloads/LaMP/LaMP_1/train/train_questions.json",
        "https://ciir.cs.umass.edu/downloads/LaMP/LaMP_1/train/train_outputs.json",
    )
    assert lamp_urls("LaMP-3", "dev", "time")[0] == "https://ciir.cs.umass.edu/downloads/LaMP/time/LaMP_3/dev/dev_questions.json"
    assert lamp_urls("LaMP-2", "dev")[0] == "https://ciir.cs.umass.edu/downloads/LaMP/LaMP_2/new/dev/dev_questions.json"
    assert lamp_urls("LaMP-2", "train", "time")[0] == "https://ciir.cs.umass.edu/downloads/LaMP/time/LaMP_2/new/train/train_questions.json"
    assert lamp_urls("LaMP-4", "test")[1] is None
    with pytest.raises(InputError, match="split kind"):
        lamp_urls("LaMP-4", "dev", "random")


def _mirror(root: Path, kind: str = "user") -> None:
    """The official folder layout under `root`, filled with the LaMP-3 fixture."""
    base = root / "time" if kind == "time" else root
    (base / "LaMP_3" / "dev").mkdir(parents=True)
    for part in ("questions", "outputs"):
        shutil.copy(LAMP / "LaMP_3" / f"dev_{part}.json", base / "LaMP_3" / "dev" / f"dev_{part}.json")


def test_download_from_a_file_url_into_the_cache(tmp_path):
    _mirror(tmp_path / "mirror", "time")
    cache = tmp_path / "cache"
    data = load_lamp_split("LaMP-3", "dev", "time", cache_dir=cache, base_url=(tmp_path / "mirror").as_uri())
    assert data.golds == {"3-1": "1", "3-2": "5", "3-3": "3"}
    assert (cache / "time" / "LaMP_3" / "dev_questions.json").is_file()
    shutil.rmtree(tmp_path / "mirror")  # the second load is served from the cache
    assert len(load_lamp_split("LaMP-3", "dev", "time", cache_dir=cache, base_url="file:///nowhere")) == 3


def test_download_over_http_from_localhost(tmp_path):
    _mirror(tmp_path / "www")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        questions, outputs = download_lamp("lamp3", "dev", cache_dir=tmp_path / "c", base_url=url)
        assert questions.read_bytes() == (LAMP / "LaMP_3" / "dev_questions.json").read_bytes()
        with pytest.raises(InputError, match="could not download"):
            download_lamp("LaMP-4", "dev", cache_dir=tmp_path / "c", base_url=url)
        assert not list((tmp_path / "c" / "user" / "LaMP_4").glob("*"))  # no partial file left behind
    finally:
        server.shutdown()
        server.server_close()


def test_lamp6_is_not_downloadable():
    with pytest.raises(InputError, match="Avocado"):
        download_lamp("LaMP-6", "dev")


@pytest.mark.slow
def test_real_lamp_dev_sets_load():
    root = shared_data("lamp")
    expected = {"LaMP_2_movielens_tmdb": (223, 73), "LaMP_3_amazon_mi": (298, 118),
                "LaMP_4_huffpost": (611, 96), "LaMP_5_acl_anthology": (720, 720)}
    for folder, (examples, users) in expected.items():
        data = load_lamp(folder[:6], root / folder / "dev_questions.json", root / folder / "dev_outputs.json")
        assert (len(data), len(data.users)) == (examples, users)
