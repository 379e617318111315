"""Qrels, runs, metrics and the BEIR loader, on hand-made fixtures with hand-computed values."""

from __future__ import annotations

import functools
import http.server
import logging
import math
import shutil
import threading
import zipfile
from pathlib import Path

import pytest

from personarag import Document, InputError, Query, Ranking, ScoredDoc
from personarag.evaluation.beir import BEIR_URL, download_beir, load_beir
from personarag.evaluation.metrics import evaluate, parse_measure
from personarag.evaluation.qrels import Qrels
from personarag.evaluation.runs import Run

FIXTURE = Path(__file__).parent / "fixtures" / "beir_mini"

QRELS = {"q1": {"d1": 1, "d3": 2}, "q2": {"d5": 1, "d6": 0}, "q3": {"d4": 1}}
# q3 is judged but absent from the run: it must count as 0 everywhere.
RUN = Run({"q1": [("d3", 3.0), ("d2", 2.0), ("d1", 1.0)], "q2": [("d6", 5.0), ("d5", 4.0)]})


# --- metrics --------------------------------------------------------------------------
def test_metrics_match_hand_computed_values():
    result = evaluate(RUN, QRELS, measures=["nDCG@10", "MRR@10", "Recall@2", "MAP", "P@2", "nDCG@1"])
    ndcg_q1 = (2 / math.log2(2) + 1 / math.log2(4)) / (2 / math.log2(2) + 1 / math.log2(3))
    ndcg_q2 = (1 / math.log2(3)) / 1.0
    assert result.per_query["q1"]["nDCG@10"] == pytest.approx(ndcg_q1)
    assert result.per_query["q2"]["nDCG@10"] == pytest.approx(ndcg_q2)
    assert result.per_query["q3"]["nDCG@10"] == 0.0
    assert result.aggregate["nDCG@10"] == pytest.approx((ndcg_q1 + ndcg_q2) / 3)
    assert result.aggregate["MRR@10"] == pytest.approx((1 + 1 / 2 + 0) / 3)
    assert result.aggregate["Recall@2"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert result.aggregate["MAP"] == pytest.approx(((1 + 2 / 3) / 2 + 1 / 2 + 0) / 3)
    assert result.aggregate["P@2"] == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)
    # nDCG@1: q1 puts its rel-2 doc first (ideal), q2 a non-relevant one.
    assert result.aggregate["nDCG@1"] == pytest.approx(1 / 3)
    assert list(result.aggregate) == ["nDCG@10", "MRR@10", "Recall@2", "MAP", "P@2", "nDCG@1"]
    assert result.missing_queries == ("q3",)
    assert result.num_queries == 3


def test_missing_query_counts_where_pytrec_eval_alone_drops_it():
    import pytrec_eval

    alone = pytrec_eval.RelevanceEvaluator(QRELS, {"ndcg_cut.10"}).evaluate(RUN.to_dict())
    assert sorted(alone) == ["q1", "q2"]  # q3 silently gone
    ours = evaluate(RUN, QRELS, measures=["nDCG@10"])
    mean_of_two = (alone["q1"]["ndcg_cut_10"] + alone["q2"]["ndcg_cut_10"]) / 2
    assert ours.aggregate["nDCG@10"] == pytest.approx(mean_of_two * 2 / 3)
    # An entirely empty ranking for a query is the same as a missing one.
    with_empty = Run.from_scores({**RUN.to_dict(), "q3": {}})
    assert evaluate(with_empty, QRELS, ["nDCG@10"]).aggregate == ours.aggregate


def test_run_order_is_scored_not_a_resort_by_score():
    qrels = {"q": {"a": 1}}
    tied = Run({"q": [("a", 1.0), ("b", 1.0)]})
    # trec_eval breaks score ties by doc id descending, which would put b first.
    assert evaluate(tied, qrels, ["RR@10"]).aggregate["RR@10"] == 1.0
    inverted = Run({"q": [("b", 0.1), ("a", 9.0)]})  # e.g. a reranked head above an old-score tail
    assert evaluate(inverted, qrels, ["RR@10"]).aggregate["RR@10"] == 0.5


def test_evaluate_accepts_rankings_and_score_dicts():
    docs = {i: Document(i, f"text {i}") for i in ("d1", "d2", "d3")}
    rankings = [Ranking(Query("q1", "x"), [ScoredDoc(docs["d3"], 2.0), ScoredDoc(docs["d1"], 1.0)])]
    from_rankings = evaluate(rankings, {"q1": {"d1": 1}}, ["RR@10"])
    assert from_rankings.aggregate["RR@10"] == 0.5
    # Unordered scores: sorted by score, ties by doc id ascending (d1 before d2).
    from_scores = evaluate({"q1": {"d2": 1.0, "d1": 1.0}}, {"q1": {"d2": 1}}, ["RR@10"])
    assert from_scores.aggregate["RR@10"] == 0.5


def test_measure_names_and_errors():
    assert str(parse_measure("MRR@10")) == "RR@10"
    assert str(parse_measure("Recall@100")) == "R@100"
    assert str(parse_measure("MAP")) == "AP"
    both = evaluate(RUN, QRELS, ["MRR@10", "RR@10"])
    assert both.aggregate["MRR@10"] == both.aggregate["RR@10"] == pytest.approx(0.5)
    with pytest.raises(InputError, match="unknown measure 'ndgc@10'"):
        evaluate(RUN, QRELS, ["ndgc@10"])
    with pytest.raises(InputError, match="qrels are empty"):
        evaluate(RUN, {}, ["nDCG@10"])


# --- runs -----------------------------------------------------------------------------
def test_trec_round_trip_keeps_order_and_scores(tmp_path):
    run = Run({"q1": [("d3", 0.5), ("d1", 0.5), ("d2", 0.25)], "q2": [("d9", 1e-9), ("d8", 7.0)]})
    path = run.write_trec(tmp_path / "run.trec", name="sys-a", scores="kept")
    lines = path.read_text().splitlines()
    assert lines[0] == "q1 Q0 d3 1 0.5 sys-a"
    assert lines[4] == "q2 Q0 d8 2 7.0 sys-a"
    again = Run.read_trec(path)
    assert again.name == "sys-a"
    assert again.to_dict() == run.to_dict()
    assert [d for d, _ in again["q1"]] == ["d3", "d1", "d2"]
    assert [d for d, _ in again["q2"]] == ["d9", "d8"]


def test_written_scores_fall_strictly_so_trec_eval_scores_the_ranked_order(tmp_path):
    # a reranked head above the retriever's tail (whose old scores are higher), and a tie
    run = Run({"q1": [("d3", 0.9), ("d1", 0.9), ("d7", 12.0), ("d2", 11.0)], "q2": [("d9", 2.0), ("d8", 1.0)]})
    path = run.write_trec(tmp_path / "run.trec", name="sys")
    rows = [line.split() for line in path.read_text().splitlines()]
    q1 = [(r[2], float(r[4])) for r in rows if r[0] == "q1"]
    assert [d for d, _ in sorted(q1, key=lambda r: -r[1])] == ["d3", "d1", "d7", "d2"]  # trec_eval's re-sort
    assert q1[0] == ("d3", 0.9) and q1[1][1] == pytest.approx(0.9 - 1e-6) and q1[3][1] < q1[2][1] < q1[1][1]
    assert [(r[2], float(r[4])) for r in rows if r[0] == "q2"] == [("d9", 2.0), ("d8", 1.0)]  # already falling: unchanged
    assert [d for d, _ in Run.read_trec(path)["q1"]] == ["d3", "d1", "d7", "d2"]
    pytrec_eval = pytest.importorskip("pytrec_eval")
    qrels = {"q1": {"d3": 0, "d1": 0, "d7": 1, "d2": 0}}
    ours = evaluate(Run.read_trec(path), qrels, ["RR@10"]).aggregate["RR@10"]
    theirs = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(
        {"q1": {d: s for d, s in q1}})["q1"]["recip_rank"]
    assert ours == theirs == pytest.approx(1 / 3)
    with pytest.raises(InputError, match="scores must be 'monotone' or 'kept'"):
        run.write_trec(tmp_path / "x.trec", scores="sorted")


def test_read_trec_orders_by_rank_then_score_then_doc(tmp_path):
    path = tmp_path / "run.txt"
    path.write_text("q1 Q0 b 0 1.0 x\nq1 Q0 c 0 2.0 x\nq1 Q0 a 0 1.0 x\n")
    assert [d for d, _ in Run.read_trec(path)["q1"]] == ["c", "a", "b"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("q1 Q0 d1 1 0.5", "run.trec:2: expected 6 columns"),
        ("q1 Q0 d2 one 0.5 x", "run.trec:2: rank must be an integer"),
        ("q1 Q0 d2 2 high x", "run.trec:2: score must be a number"),
        ("q1 Q0 d1 2 0.4 x", "run.trec:2: document 'd1' is ranked twice"),
    ],
)
def test_read_trec_errors_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "run.trec"
    path.write_text(f"q1 Q0 d1 1 0.9 x\n{line}\n")
    with pytest.raises(InputError, match=message):
        Run.read_trec(path)


def test_run_rejects_duplicates_and_bad_names(tmp_path):
    with pytest.raises(InputError, match="ranks document 'd1' twice"):
        Run({"q": [("d1", 1.0), ("d1", 0.5)]})
    with pytest.raises(InputError, match="use Run.from_scores"):
        Run({"q": {"d1": 1.0}})
    with pytest.raises(InputError, match="without spaces"):
        RUN.write_trec(tmp_path / "r.trec", name="my run")


# --- qrels ----------------------------------------------------------------------------
def test_qrels_reads_beir_tsv_with_crlf_and_trec_qrels(tmp_path):
    assert b"\r\n" in (FIXTURE / "qrels" / "test.tsv").read_bytes()
    qrels = Qrels.read(FIXTURE / "qrels" / "test.tsv")
    assert qrels.query_ids == ["q3", "q1", "q2"]  # file order
    assert dict(qrels["q1"]) == {"d1": 1, "d3": 2}
    assert qrels.num_judgements == 5
    assert qrels.relevant("q2") == ["d5"]
    trec = tmp_path / "qrels.txt"
    trec.write_text("q1 0 d1 1\r\nq1 0 d3 2\nq2 0 d5 1\n")
    assert Qrels.read(trec).to_dict() == {"q1": {"d1": 1, "d3": 2}, "q2": {"d5": 1}}
    again = qrels.write(tmp_path / "out.tsv")
    assert Qrels.read(again).to_dict() == qrels.to_dict()


def test_qrels_errors(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\n")
    with pytest.raises(InputError, match="bad.tsv:3: expected 3 columns"):
        Qrels.read(bad)
    bad.write_text("query-id\tcorpus-id\tscore\nq1\td1\tvery\n")
    with pytest.raises(InputError, match="bad.tsv:2: relevance must be an integer"):
        Qrels.read(bad)
    with pytest.raises(InputError, match="does not exist"):
        Qrels.read(tmp_path / "nope.tsv")


# --- BEIR -----------------------------------------------------------------------------
def test_load_beir_folder():
    data = load_beir(FIXTURE, split="test")
    assert data.name == "beir_mini"
    assert len(data.corpus) == 6
    assert data.corpus["d1"].title == "Cats"
    assert data.corpus["d3"].title is None  # empty BEIR title
    assert data.corpus["d3"].meta == {"source": "story"}
    assert [q.id for q in data.queries] == ["q3", "q1", "q2"]  # judged in the split, qrels order
    assert data.queries[1].text == "cat chasing a mouse"
    assert load_beir(FIXTURE, split="train").queries == [Query("q4", "loyal pets")]


@pytest.fixture()
def beir_copy(tmp_path):
    target = tmp_path / "mini"
    shutil.copytree(FIXTURE, target)
    return target


def test_missing_split_lists_available(beir_copy):
    with pytest.raises(InputError, match="split 'dev'.*splits available: test, train"):
        load_beir(beir_copy, split="dev")


def test_malformed_jsonl_names_file_and_line(beir_copy):
    with (beir_copy / "corpus.jsonl").open("a") as handle:
        handle.write('{"_id": "d7", "text": oops}\n')
    with pytest.raises(InputError, match=r"corpus\.jsonl:7: not valid JSON"):
        load_beir(beir_copy)


def test_missing_fields_are_named(beir_copy):
    with (beir_copy / "corpus.jsonl").open("a") as handle:
        handle.write('{"_id": "d7", "title": "no text"}\n')
    with pytest.raises(InputError, match=r"corpus\.jsonl:7: missing field 'text'"):
        load_beir(beir_copy)
    shutil.copy(FIXTURE / "corpus.jsonl", beir_copy / "corpus.jsonl")
    with (beir_copy / "queries.jsonl").open("a") as handle:
        handle.write('{"text": "who am i"}\n')
    with pytest.raises(InputError, match=r"queries\.jsonl:5: missing field '_id'"):
        load_beir(beir_copy)


def test_empty_query_text_names_the_query(beir_copy):
    path = beir_copy / "queries.jsonl"
    path.write_text(path.read_text().replace("what do mice eat", "  "))
    with pytest.raises(InputError, match="query 'q3' has empty text"):
        load_beir(beir_copy)


def test_unknown_docs_and_queries_are_counted_and_kept(beir_copy, caplog):
    with (beir_copy / "qrels" / "test.tsv").open("a", newline="") as handle:
        handle.write("q1\tghost-1\t1\r\nq1\tghost-2\t1\r\nq9\td1\t1\r\n")
    with caplog.at_level(logging.WARNING, logger="personarag.evaluation.beir"):
        data = load_beir(beir_copy)
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert "2 judged documents are not in corpus.jsonl" in messages
    assert "1 judged queries are not in queries.jsonl" in messages
    assert data.qrels["q1"]["ghost-1"] == 1 and "q9" in data.qrels
    assert [q.id for q in data.queries] == ["q3", "q1", "q2"]


def test_unknown_name_or_path_is_an_error(tmp_path):
    with pytest.raises(InputError, match="neither an existing dataset folder nor a BEIR dataset name"):
        load_beir(tmp_path / "missing" / "folder")
    with pytest.raises(InputError, match="not a BEIR dataset folder: corpus.jsonl is missing"):
        load_beir(tmp_path)


def _zip_fixture(tmp_path: Path, name: str) -> Path:
    served = tmp_path / "served"
    served.mkdir()
    archive = served / f"{name}.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in sorted(FIXTURE.rglob("*")):
            if file.is_file():
                zf.write(file, f"{name}/{file.relative_to(FIXTURE).as_posix()}")
    return served


def test_download_by_name_from_file_url_then_cache(tmp_path):
    served = _zip_fixture(tmp_path, "minifact")
    url = served.as_uri() + "/{name}.zip"
    cache = tmp_path / "cache"
    data = load_beir("minifact", cache_dir=cache, url=url)
    assert data.name == "minifact" and len(data.corpus) == 6 and len(data.queries) == 3
    assert (cache / "minifact" / "qrels" / "test.tsv").read_bytes() == (FIXTURE / "qrels" / "test.tsv").read_bytes()
    (served / "minifact.zip").unlink()  # a second load must come from the cache
    assert load_beir("minifact", split="train", cache_dir=cache, url=url).queries[0].id == "q4"
    with pytest.raises(InputError, match="could not download BEIR dataset 'otherset'"):
        download_beir("otherset", cache_dir=cache, url=url)


def test_download_over_http_from_a_local_server(tmp_path):
    served = _zip_fixture(tmp_path, "minifact")
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{{name}}.zip"
        root = download_beir("minifact", cache_dir=tmp_path / "cache", url=url)
        assert (root / "corpus.jsonl").is_file()
        with pytest.raises(InputError, match="404"):
            download_beir("absent", cache_dir=tmp_path / "cache", url=url)
    finally:
        server.shutdown()
        server.server_close()
    assert "{name}" in BEIR_URL and BEIR_URL.startswith("https://public.ukp.informatik.uni-darmstadt.de/")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass
