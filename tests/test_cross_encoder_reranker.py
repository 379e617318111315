"""CrossEncoderReranker with a tiny random BERT cross-encoder built from a config."""

from __future__ import annotations

import json

import pytest

from personarag import Document, Pipeline, Query, Ranking, ScoredDoc, registry
from personarag.rerankers.cross_encoder import CrossEncoderReranker


@pytest.fixture(scope="module")
def tiny_cross_encoder(minilm_path, tmp_path_factory):
    pytest.importorskip("sentence_transformers")
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, num_labels=1,
    )
    model = BertForSequenceClassification(config)
    path = tmp_path_factory.mktemp("tiny-ce")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def rankings():
    texts = ["gene expression in tumors", "heart disease risk", "immune cells and viruses", "drug trial outcomes", "brain imaging"]
    docs = [Document(f"d{i}", t, title=f"T{i}") for i, t in enumerate(texts)]
    return [
        Ranking(Query("q1", "tumor gene"), [ScoredDoc(d, 1.0) for d in docs]),
        Ranking(Query("q2", "heart drug"), [ScoredDoc(d, 1.0) for d in reversed(docs)]),
        Ranking(Query("q3", "empty"), []),
    ]


def test_reorders_by_the_models_own_scores(tiny_cross_encoder):
    from sentence_transformers import CrossEncoder

    reranker = CrossEncoderReranker(tiny_cross_encoder, batch_size=3, max_length=64, device="cpu")
    out = reranker.rerank(rankings())
    reference = CrossEncoder(tiny_cross_encoder, max_length=64, device="cpu")
    for before, after in zip(rankings(), out):
        if not before.docs:
            assert after.docs == ()
            continue
        direct = reference.predict([(before.query.text, s.doc.full_text) for s in before.docs])
        expected = sorted(zip(direct.tolist(), before.ids), key=lambda pair: -pair[0])
        assert after.ids == [doc_id for _, doc_id in expected]
        assert [d.score for d in after.docs] == pytest.approx([s for s, _ in expected], abs=1e-6)
        assert after.trace[-1].stage == "cross-encoder"
    assert any(after.ids != before.ids for before, after in zip(rankings(), out))  # the model did reorder


def test_activation_identity_gives_logits_in_the_same_order(tiny_cross_encoder):
    default = CrossEncoderReranker(tiny_cross_encoder).rerank(rankings()[:1])[0]
    logits = CrossEncoderReranker(tiny_cross_encoder, activation="identity").rerank(rankings()[:1])[0]
    assert default.ids == logits.ids
    assert all(0 < d.score < 1 for d in default.docs)
    assert [d.score for d in logits.docs] != [d.score for d in default.docs]


def test_config_round_trip_and_pipeline_spec(tiny_cross_encoder):
    reranker = registry.build(f"cross-encoder:{tiny_cross_encoder}", batch_size=4)
    config = reranker.config()
    assert config == {"spec": "cross-encoder", "params": {"model": tiny_cross_encoder, "batch_size": 4}}
    again = registry.build_from_config(json.loads(json.dumps(config)))
    assert again.rerank(rankings()[:1])[0].ids == reranker.rerank(rankings()[:1])[0].ids
    pipe = Pipeline([f"cross-encoder:{tiny_cross_encoder}"])
    assert pipe.config()["stages"][0]["spec"] == "cross-encoder"


def test_first_stage_weight_interpolates_with_the_incoming_scores(tiny_cross_encoder):
    from personarag.rerankers.interpolation import interpolate_rankings

    docs = [Document(f"d{i}", t) for i, t in enumerate(["gene expression", "heart disease", "immune cells", "drug trials"])]
    first = Ranking(Query("q1", "tumor gene"), [ScoredDoc(d, s) for d, s in zip(docs, [9.0, 7.0, 6.5, 1.0])])
    [alone] = CrossEncoderReranker(tiny_cross_encoder, max_length=64).rerank(first)
    [fused] = CrossEncoderReranker(tiny_cross_encoder, max_length=64, first_stage_weight=0.3).rerank(first)
    expected = interpolate_rankings(first, alone, 0.3)
    assert fused.ids == [sd.id for sd in expected]
    assert [sd.score for sd in fused.docs] == pytest.approx([sd.score for sd in expected])
    assert fused.trace[-1].info["first_stage_weight"] == 0.3 and "first_stage_weight" not in alone.trace[-1].info
    [first_only] = CrossEncoderReranker(tiny_cross_encoder, max_length=64, first_stage_weight=1.0).rerank(first)
    assert first_only.ids == first.ids
    with pytest.raises(Exception, match=r"first_stage_weight must be a number in \[0, 1\]"):
        CrossEncoderReranker(tiny_cross_encoder, first_stage_weight=2)
