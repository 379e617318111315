"""Training data: qrels positives, mined hard negatives (never a judged positive), seeds, missing ids."""

from __future__ import annotations

import pytest
from training_models import write_beir

from personarag.errors import InputError
from personarag.training.data import (
    TrainingData,
    TrainingExample,
    build_examples,
    build_from_beir,
    candidates_from_run,
    read_examples,
    write_examples,
)
from personarag.types import Corpus, Document, Query


@pytest.fixture()
def beir(tmp_path):
    return write_beir(tmp_path / "beir")


def test_bm25_negatives_exclude_positives_and_missing_ids_are_counted(beir):
    data = build_from_beir(beir, "train", miner="bm25", negatives=3, depth=8, seed=0)
    report = data.report
    assert report.missing_docs == 1  # q6 -> d404
    assert report.missing_queries == 1  # q404
    assert report.queries == 6 and report.positives == 6
    positives = {(e.query_id, e.doc_id) for e in data.examples if e.label == 1.0}
    negatives = [(e.query_id, e.doc_id) for e in data.examples if e.label == 0.0]
    assert len(negatives) == report.negatives == 18
    assert not positives & set(negatives)
    assert "d404" not in {d for _, d in negatives}
    # each query's texts are the real ones, and document text is title + body
    q3 = [e for e in data.examples if e.query_id == "q3" and e.doc_id == "d4"][0]
    assert q3.query_text == "what do mice eat" and q3.doc_text.startswith("Mice\n")


def test_a_query_with_two_positives_never_gets_either_as_negative(tmp_path):
    beir = write_beir(tmp_path / "b", train=[("q1", "d3", 1), ("q1", "d1", 2), ("q1", "d10", 0)])
    for seed in range(5):
        data = build_from_beir(beir, "train", miner="bm25", negatives=9, depth=10, seed=seed)
        negatives = {e.doc_id for e in data.examples if e.label == 0}
        assert negatives == {f"d{i}" for i in range(1, 11)} - {"d1", "d3"}  # all other docs, d10 (rel 0) included


def test_negatives_are_seeded_per_query(beir):
    def negatives(seed, query_ids=None):
        data = build_from_beir(beir, "train", miner="bm25", negatives=2, depth=9, seed=seed, query_ids=query_ids)
        return {(e.query_id, e.doc_id) for e in data.examples if e.label == 0}

    assert negatives(3) == negatives(3)
    assert any(negatives(s) != negatives(0) for s in range(1, 6))
    # the same query gets the same negatives when built alone
    assert {p for p in negatives(3) if p[0] == "q2"} == negatives(3, query_ids=["q2"])


def test_top_sampling_takes_the_best_ranked_non_positives():
    corpus = Corpus([Document(f"d{i}", f"text {i}") for i in range(6)])
    queries = [Query("q", "a query")]
    data = build_examples(corpus, queries, {"q": {"d1": 1}}, {"q": ["d1", "d4", "d9", "d2", "d0"]},
                          negatives=2, sampling="top")
    assert [e.doc_id for e in data.examples] == ["d1", "d4", "d2"]  # d9 is not in the corpus
    assert data.report.queries_without_negatives == 0


def test_no_positive_in_the_split_is_a_clear_error(tmp_path):
    beir = write_beir(tmp_path / "b", train=[("q1", "d3", 0), ("q2", "missing", 1)])
    with pytest.raises(InputError, match="no positive judgement"):
        build_from_beir(beir, "train", miner=None)


def test_negatives_from_a_trec_run(beir, tmp_path):
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 d3 1 9 r\nq1 Q0 d7 2 8 r\nq1 Q0 d8 3 7 r\nq3 Q0 d10 1 5 r\n")
    assert candidates_from_run(run, depth=2) == {"q1": ["d3", "d7"], "q3": ["d10"]}
    data = build_from_beir(beir, "train", run=run, negatives=5, depth=3)
    negatives = {(e.query_id, e.doc_id) for e in data.examples if e.label == 0}
    assert negatives == {("q1", "d7"), ("q1", "d8"), ("q3", "d10")}
    assert data.report.queries_without_negatives == 4  # q2, q4, q5, q6 are not in the run


def test_feedback_examples_round_trip_through_jsonl(tmp_path):
    examples = [TrainingExample("u1-q", "a headline", "p7", "a profile item", 0.75),
                TrainingExample("u1-q", "a headline", "p8", "another item", 0)]
    path = write_examples(examples, tmp_path / "feedback.jsonl")
    data = read_examples(path)
    assert data.examples == tuple(examples)
    assert (data.report.positives, data.report.negatives, data.report.queries) == (1, 1, 1)
    [group] = data.groups()
    assert [e.doc_id for e in group.positives] == ["p7"] and [e.doc_id for e in group.negatives] == ["p8"]


def test_bad_examples_are_refused_with_their_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"query_id": "q", "query_text": "t", "doc_id": "d", "doc_text": "x", "label": 1}\n{"query_id": "q"}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:2: missing fields"):
        read_examples(path)
    with pytest.raises(InputError, match="label must be a number"):
        TrainingExample("q", "t", "d", "x", "yes")
    with pytest.raises(InputError, match="no training examples"):
        TrainingData.from_examples([])


@pytest.mark.slow
def test_scifact_train_with_bm25_hard_negatives(scifact_dir):
    data = build_from_beir(scifact_dir, "train", miner="bm25", negatives=3, depth=30, seed=0)
    report = data.report
    # SciFact train: 809 judged queries, 919 judgements, every judged document and query present
    assert (report.queries, report.positives, report.missing_docs, report.missing_queries) == (809, 919, 0, 0)
    assert report.negatives == 3 * 809 and report.queries_without_negatives == 0
    from personarag.evaluation.qrels import Qrels

    qrels = Qrels.read(scifact_dir / "qrels" / "train.tsv")
    assert not any(e.label == 0 and qrels[e.query_id].get(e.doc_id, 0) > 0 for e in data.examples)


def test_llm_feedback_scores_become_soft_labels():
    from personarag.training.data import examples_from_feedback

    query = Query("u1-q1", "headline for this article")
    docs = [Document("p1", "an old headline"), Document("p2", "another", title="T")]
    examples = examples_from_feedback(query, docs, [-1.0, -3.0])
    assert [e.doc_id for e in examples] == ["p1", "p2"]
    assert sum(e.label for e in examples) == pytest.approx(1.0)
    assert examples[0].label == pytest.approx(1 / (1 + 2.718281828459045 ** -2))
    assert examples[1].doc_text == "T\nanother"
    flat = examples_from_feedback(query, docs, [-1.0, -3.0], temperature=100.0)
    assert flat[0].label - flat[1].label < examples[0].label - examples[1].label
    with pytest.raises(InputError, match="2 documents but 1 scores"):
        examples_from_feedback(query, docs, [0.0])
