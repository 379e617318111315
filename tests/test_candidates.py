"""First-stage candidate files (rank_llm / Ragnarok requests, TREC run + docs) and `eval rerank`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import FIXTURES, shared_data
from personarag.cli import main
from personarag.errors import InputError
from personarag.evaluation.candidates import read_candidates, read_docs, read_trec_candidates
from personarag.evaluation.qrels import Qrels
from personarag.experiment.candidates import CandidateDataset, at_relevance_level
from personarag.experiment.oracle import OracleReranker
from personarag.experiment.runner import Experiment
from personarag.pipeline import Pipeline

HERE = FIXTURES / "candidates"
# nDCG@10 of the fixture's first stage, by hand (trec_eval gains = grades):
# q101 d1(3) d2(0) d3(1) d4(0): (3 + 1/log2 4) / (3 + 1/log2 3); q102 d5(0) d6(3) d7(2):
# (3/log2 3 + 2/log2 4) / (3 + 2/log2 3); q104 is judged but has no candidates: 0.
NDCG_101 = 3.5 / (3 + 1 / math.log2(3))
NDCG_102 = (3 / math.log2(3) + 1) / (3 + 2 / math.log2(3))
FIRST_STAGE_NDCG = (NDCG_101 + NDCG_102) / 3


def _shape(candidates):
    return [(r.query.id, r.query.text, [(d.doc.id, d.doc.text, d.score) for d in r.docs]) for r in candidates.rankings]


def test_rank_llm_and_ragnarok_shapes_read_the_same_rankings():
    rank_llm = read_candidates(HERE / "rank_llm.json")
    ragnarok = read_candidates(HERE / "ragnarok.jsonl")
    assert _shape(rank_llm) == _shape(ragnarok)
    assert [r.query.id for r in rank_llm.rankings] == ["101", "102", "103"]  # int qids become strings
    assert rank_llm["101"].ids == ["d1", "d2", "d3", "d4"]
    assert rank_llm["101"].docs[2].score == 9.25
    assert ragnarok["101"].docs[0].doc.title == "Cat diet"
    assert ragnarok["101"].docs[2].doc.title is None  # an empty title is no title
    assert rank_llm.depth == 4


def test_trec_run_with_docs_and_topics_reads_the_same_rankings():
    rank_llm = read_candidates(HERE / "rank_llm.json")
    for docs in ("docs.jsonl", "docs.tsv"):
        trec = read_trec_candidates(HERE / "run.trec", HERE / docs, HERE / "topics.tsv")
        assert _shape(trec) == _shape(rank_llm)  # the run lists d2 before d1: its rank column decides
    assert set(read_docs(HERE / "docs.jsonl", {"d1", "d9"})) == {"d1", "d9"}


def test_hits_are_ordered_by_rank_and_hits_without_scores_by_position(tmp_path):
    path = tmp_path / "c.jsonl"
    hits = [{"docid": "b", "content": "second", "rank": 2}, {"docid": "a", "content": "first", "rank": 1}]
    path.write_text(json.dumps({"query": "q", "qid": 7, "hits": hits}) + "\n")
    ranking = read_candidates(path)["7"]
    assert ranking.ids == ["a", "b"]
    assert [d.score for d in ranking.docs] == [0.0, -1.0]


@pytest.mark.parametrize(
    "request_, message",
    [
        ({"query": {"qid": 1, "text": "q"}, "candidates": [{"docid": "a", "doc": {"title": "t"}}]},
         r"c.jsonl:2, candidates\[0\], doc: no text field; expected one of \['segment'"),
        ({"query": {"qid": 1, "text": "q"}, "hits": [{"docid": "a", "content": "x"}, {"docid": "a", "content": "y"}]},
         r"c.jsonl:2, hits\[1\]: document 'a' appears twice for query '1' \(first at hits\[0\]\)"),
        ({"query": {"qid": 1, "text": "q"}, "hits": [{"docid": "a", "content": "  "}]},
         r"c.jsonl:2, hits\[0\]: field 'content' is empty"),
        ({"query": {"qid": 1, "text": "q"}, "hits": [{"content": "x"}]},
         r"c.jsonl:2, hits\[0\]: missing field 'docid'"),
        ({"query": "q", "hits": [{"docid": "a", "content": "x"}]},
         r"c.jsonl:2: the query is a plain string and no qid was found"),
        ({"query": {"qid": 1, "text": "q"}, "hits": [{"docid": "a", "content": "x", "qid": 2}]},
         r"c.jsonl:2, hits\[0\]: the hit's qid 2 is not the request's qid '1'"),
        ({"query": {"qid": 1, "text": "q"}, "hits": [{"docid": "a", "content": "x", "rank": "1"}]},
         r"c.jsonl:2, hits\[0\]: field 'rank' must be an integer"),
        ({"query": {"qid": 1, "text": "q"}, "documents": []},
         r"c.jsonl:2: missing field 'hits' \(rank_llm\) or 'candidates' \(Ragnarok\)"),
        ({"query": {"qid": 0, "text": "first"}, "hits": []},
         r"c.jsonl:2: query '0' appears a second time \(first at .*c.jsonl:1\)"),
    ],
)
def test_bad_requests_name_file_line_and_field(tmp_path, request_, message):
    path = tmp_path / "c.jsonl"
    first = {"query": {"qid": 0, "text": "first"}, "hits": [{"docid": "z", "content": "fine"}]}
    path.write_text(json.dumps(first) + "\n" + json.dumps(request_) + "\n")
    with pytest.raises(InputError, match=message):
        read_candidates(path)


def test_a_json_list_names_the_record(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps([{"query": "q", "hits": [{"qid": 3, "docid": "a", "content": "x"}]},
                                {"query": "q", "hits": [{"qid": 4, "docid": "a"}]}]))
    with pytest.raises(InputError, match=r"c.json: record 1, hits\[0\]: no text; expected 'content' or 'doc'"):
        read_candidates(path)


def test_trec_documents_missing_from_the_docs_file_are_named(tmp_path):
    (tmp_path / "docs.tsv").write_text("d1\tonly one\n")
    with pytest.raises(InputError, match=r"docs.tsv: 7 documents ranked in .*run.trec are not in it"):
        read_trec_candidates(HERE / "run.trec", tmp_path / "docs.tsv", HERE / "topics.tsv")


def _dataset(**options):
    return CandidateDataset(read_candidates(HERE / "rank_llm.json"), Qrels.read(HERE / "qrels.txt"), **options)


def test_without_rerankers_the_first_stage_is_reproduced_and_coverage_counted(tmp_path):
    data = _dataset(relevance_level=2)
    assert [q.id for q in data.queries] == ["101", "102"]  # 103 is not judged: not run
    assert data.coverage == {"queries": 3, "judged": 2, "not_in_qrels": 1, "judged_without_candidates": 1}
    result = Experiment(Pipeline([]), data, ["nDCG@10", "MRR(rel=2)@10", "Recall(rel=2)@2", "Recall@2"],
                        output_dir=tmp_path, progress=False).run()
    metrics = next(iter(result.systems.values())).metrics
    assert metrics["nDCG@10"] == pytest.approx(FIRST_STAGE_NDCG, abs=1e-9)
    assert metrics["MRR(rel=2)@10"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert metrics["Recall(rel=2)@2"] == pytest.approx((1 + 0.5 + 0) / 3)  # d3 (grade 1) does not count
    assert metrics["Recall@2"] == pytest.approx((0.5 + 0.5 + 0) / 3)
    lines = (tmp_path / "run.trec").read_text().splitlines()
    assert [line.split()[2] for line in lines] == ["d1", "d2", "d3", "d4", "d5", "d6", "d7"]
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["candidates"]["not_in_qrels"] == 1 and stats["judged_queries"] == 3


def test_a_reranker_reorders_only_the_top_depth(tmp_path):
    oracle = OracleReranker(str(HERE / "qrels.txt"))
    result = Experiment(Pipeline([oracle], rerank_depth=2), _dataset(), ["nDCG@10"], output_dir=tmp_path,
                        progress=False).run()
    ranked = [line.split()[2] for line in (tmp_path / "run.trec").read_text().splitlines()]
    assert ranked == ["d1", "d2", "d3", "d4", "d6", "d5", "d7"]  # q102's top 2 swapped, d7 stays third
    ndcg_102 = (3 + 2 / math.log2(4)) / (3 + 2 / math.log2(3))
    assert next(iter(result.systems.values())).metrics["nDCG@10"] == pytest.approx((NDCG_101 + ndcg_102) / 3)


def test_a_retriever_is_refused_since_the_candidates_are_the_first_stage(tmp_path):
    with pytest.raises(InputError, match="the candidates are the first stage; give rerankers only"):
        Experiment(Pipeline(["bm25"]), _dataset(), output_dir=tmp_path)


def test_relevance_level_goes_into_binary_measures_only():
    assert at_relevance_level("MRR@10", 2) == "MRR(rel=2)@10"
    assert at_relevance_level("Recall@100", 2) == "Recall(rel=2)@100"
    assert at_relevance_level("MAP", 2) == "MAP(rel=2)"
    assert at_relevance_level("nDCG@10", 2) == "nDCG@10"
    assert at_relevance_level("MRR@10", None) == "MRR@10"
    assert _dataset(relevance_level=2).default_measures == ("nDCG@10", "MRR(rel=2)@10", "Recall(rel=2)@100", "MAP(rel=2)")


def test_eval_rerank_writes_what_eval_beir_writes_and_resumes(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--no-llm-cache", "eval", "rerank", "--candidates", str(HERE / "ragnarok.jsonl"), "--qrels",
            str(HERE / "qrels.txt"), "--measures", "nDCG@10", "Recall@2", "--relevance-level", "2", "--output-dir", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "2 judged queries of 3 with candidates; 1 not in the qrels" in printed
    for name in ("run.trec", "metrics.json", "per_query.json", "stats.json", "config.json", "rankings.jsonl"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == pytest.approx({"nDCG@10": FIRST_STAGE_NDCG, "Recall(rel=2)@2": 0.5})
    # config.json is itself a valid --config, and the rerun redoes nothing
    assert main(["--no-llm-cache", "eval", "rerank", "--config", str(out / "config.json"), "--output-dir", str(out)]) == 0
    assert json.loads((out / "stats.json").read_text())["ran"] == 0


def test_eval_rerank_reads_a_trec_run(tmp_path):
    out = tmp_path / "out"
    argv = ["--no-llm-cache", "eval", "rerank", "--run", str(HERE / "run.trec"), "--docs", str(HERE / "docs.tsv"),
            "--topics", str(HERE / "topics.tsv"), "--qrels", str(HERE / "qrels.txt"), "--measures", "nDCG@10",
            "--output-dir", str(out)]
    assert main(argv) == 0
    assert json.loads((out / "metrics.json").read_text())["nDCG@10"] == pytest.approx(FIRST_STAGE_NDCG)


def test_eval_rerank_needs_exactly_one_source(tmp_path, capsys):
    assert main(["eval", "rerank", "--qrels", str(HERE / "qrels.txt"), "--output-dir", str(tmp_path)]) == 2
    assert "give exactly one of --candidates FILE or --run FILE" in capsys.readouterr().err
    assert main(["eval", "rerank", "--run", str(HERE / "run.trec"), "--qrels", str(HERE / "qrels.txt"),
                 "--output-dir", str(tmp_path)]) == 2
    assert "--run needs --docs FILE" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("first_stage, ndcg", [("BM25", 0.5058), ("SPLADE_P_P_ENSEMBLE_DISTIL", 0.7308)])
def test_dl19_first_stages_reproduce_the_published_ndcg(tmp_path, first_stage, ndcg):
    folder = shared_data("trec-dl", "dl19")
    out = tmp_path / first_stage
    argv = ["--no-llm-cache", "eval", "rerank", "--candidates", str(folder / f"{first_stage}_dl19.json"),
            "--qrels", str(folder / "qrels.dl19-passage.txt"), "--relevance-level", "2", "--output-dir", str(out)]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert round(metrics["nDCG@10"], 4) == ndcg
    assert json.loads((out / "stats.json").read_text())["judged_queries"] == 43
    # the TREC run of the same first stage gives the same number
    trec = read_trec_candidates(folder / f"{first_stage}_trec_dl19.txt", _docs_from(folder / f"{first_stage}_dl19.json", tmp_path),
                                folder / "topics.dl19-passage.txt")
    from personarag.evaluation.metrics import evaluate

    assert round(evaluate(list(trec.rankings), Qrels.read(folder / "qrels.dl19-passage.txt"), ["nDCG@10"]).aggregate["nDCG@10"], 4) == ndcg


def _docs_from(candidates: Path, tmp_path: Path) -> Path:
    """A docs file for the TREC run, written from the request file's texts (the data has no other)."""
    docs = {d.doc.id: d.doc.text for r in read_candidates(candidates).rankings for d in r.docs}
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"docid": k, "contents": v}) + "\n" for k, v in docs.items()))
    return path
