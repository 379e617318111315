"""LLM reranker training on a tiny random Llama (SmolLM2's tokenizer): pointwise and listwise LoRA SFT, GRPO.

Each run takes a couple of steps and must leave an adapter that the rerankers load as
`KIND:BASE+ADAPTER` and that changes the model's outputs.
"""

from __future__ import annotations

import pytest
from llm_models import cache_root, smollm2_tokenizer_dir, tiny_llama
from training_models import write_beir

from personarag import registry
from personarag.errors import InputError
from personarag.llm import load_llm
from personarag.training.common import read_run_file

pytest.importorskip("trl")
pytest.importorskip("peft")


@pytest.fixture(scope="module")
def llama(request, tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    tokenizer_dir = smollm2_tokenizer_dir(cache_root(request, tmp_path_factory))
    return tiny_llama(tmp_path_factory.mktemp("tiny_llama") / "model", tokenizer_dir)


@pytest.fixture(scope="module")
def beir(tmp_path_factory):
    return write_beir(tmp_path_factory.mktemp("beir"))


def sft_config(out, llama, beir, **kw):
    from personarag.training.llm_sft import LLMSFTConfig

    values = dict(output_dir=str(out), base=str(llama), dataset_dir=str(beir), negatives=1, mining_depth=8,
                  batch_size=2, max_steps=2, max_length=256, learning_rate=5e-2, window=3, lora_r=4,
                  max_doc_tokens=16, logging_steps=1)
    values.update(kw)
    return LLMSFTConfig(**values)


def mice_ranking():
    from personarag.types import Document, Query, Ranking, ScoredDoc

    docs = [Document("a", "Mice eat cheese."), Document("b", "Wind turbines."), Document("c", "Owls hunt mice.")]
    return Ranking(Query("q", "what do mice eat"), tuple(ScoredDoc(d, 0.0) for d in docs))


def answer_logprobs(spec, prompt, answers):
    llm = load_llm(spec, cache_dir=None)
    [scores] = llm.score([prompt], answers)
    return scores.logprobs


def test_pointwise_yesno_sft_gives_an_adapter_the_pointwise_reranker_uses(tmp_path, llama, beir):
    from personarag.rerankers.pointwise import PointwiseReranker
    from personarag.training.llm_sft import pointwise_rows, load_tokenizer, train_llm_sft
    from personarag.training.data import build_from_beir

    config = sft_config(tmp_path / "pw", llama, beir)
    # the targets are written in the reranker's own prompt, answers yes/no
    data = build_from_beir(beir, "train", negatives=1, depth=8)
    rows = pointwise_rows(data, config, load_tokenizer(str(llama)))
    reference = PointwiseReranker("unused").template.render(query=data.examples[0].query_text, text="X")
    assert rows[0]["prompt"][0]["content"] == reference[0].content
    assert {r["completion"][0]["content"] for r in rows} == {"yes", "no"}
    assert sum(r["completion"][0]["content"] == "yes" for r in rows) == data.report.positives

    result = train_llm_sft(config)
    assert result.rows == len(rows) and read_run_file(result.output_dir)["global_step"] == 2
    assert (result.output_dir / "adapter_config.json").is_file()
    assert "pointwise:" in (result.output_dir / "README.md").read_text()

    base = registry.build(f"pointwise:{llama}", role="reranker").rerank([mice_ranking()])[0]
    tuned = registry.build(f"pointwise:{llama}+{result.output_dir}", role="reranker").rerank([mice_ranking()])[0]
    base_scores = {s.id: s.score for s in base.docs}
    tuned_scores = {s.id: s.score for s in tuned.docs}
    assert tuned_scores.keys() == base_scores.keys()
    assert any(abs(tuned_scores[d] - base_scores[d]) > 1e-3 for d in base_scores)


def test_sft_trains_on_the_exact_tokens_the_pointwise_reranker_scores(tmp_path, llama, beir, monkeypatch):
    """Byte-identical prompts at training and inference (chat template, title + body, truncation to
    max_doc_tokens), and the loss on the answer only: its first token is the one P(yes)/P(no) reads."""
    from personarag.evaluation.beir import load_beir
    from personarag.rerankers.pointwise import PointwiseReranker
    from personarag.training.data import build_from_beir
    from personarag.training.llm_sft import load_tokenizer, pointwise_rows, sft_trainer
    from personarag.types import Query, Ranking, ScoredDoc

    config = sft_config(tmp_path / "same", llama, beir, max_doc_tokens=4)
    data = build_from_beir(beir, "train", negatives=1, depth=8)
    tokenizer = load_tokenizer(str(llama))
    trainer = sft_trainer(config, pointwise_rows(data, config, tokenizer), str(llama), tokenizer, tmp_path / "same")
    llm = load_llm(str(llama), cache_dir=None)
    scored: list[list[int]] = []
    fit = llm._fit
    monkeypatch.setattr(llm, "_fit", lambda *a, **kw: scored.append(fit(*a, **kw)) or scored[-1])
    reranker = PointwiseReranker(llm, max_doc_tokens=4)
    corpus = load_beir(beir, split="train").corpus
    assert len(trainer.train_dataset) == len(data.examples)
    for example, row in zip(data.examples, trainer.train_dataset):
        other = next(d for d in corpus.values() if d.id != example.doc_id)
        scored.clear()
        reranker.rerank([Ranking(Query(example.query_id, example.query_text), (ScoredDoc(corpus[example.doc_id], 1.0), ScoredDoc(other, 0.0)))])
        labels = row["labels"]  # -100: no loss
        start = next(i for i, label in enumerate(labels) if label != -100)
        assert row["input_ids"][:start] == scored[0]
        assert labels[start:] == row["input_ids"][start:]
        answer = "yes" if example.label >= 0.5 else "no"
        assert row["input_ids"][start] == llm.answer_ids(answer)[0]
        assert tokenizer.decode(row["input_ids"][start:]).startswith(answer)
    # the documents were cut to 4 tokens, titles kept: "Mice eat cheese, grain and seeds." is not whole
    texts = [tokenizer.decode(r["input_ids"]) for r in trainer.train_dataset]
    assert any("Document: Mice Mice" in t for t in texts) and not any("grain and seeds" in t for t in texts)


def test_held_out_queries_are_the_cross_encoders_dev_queries_and_never_trained_on(tmp_path, llama, beir):
    from personarag.training.cross_encoder import CrossEncoderTrainConfig, _split_queries
    from personarag.training.llm_sft import _query_subset, held_out_query_ids

    config = sft_config(tmp_path / "h", llama, beir, held_out_queries=2, seed=3)
    held_out = held_out_query_ids(config)
    ce = CrossEncoderTrainConfig(output_dir=str(tmp_path / "ce"), base="unused", dataset_dir=str(beir), dev_queries=2, seed=3)
    _, dev_qrels = _split_queries(ce)
    assert len(held_out) == 2 and set(held_out) == set(dev_qrels.query_ids)
    trained = _query_subset(config)
    assert trained and not set(trained) & set(held_out)
    assert set(trained) | set(held_out) >= {"q1", "q2", "q3", "q4", "q5"}
    with pytest.raises(InputError, match="leaves no training query"):
        held_out_query_ids(sft_config(tmp_path / "h2", llama, beir, held_out_queries=99))


def test_fine_and_reason_targets(tmp_path, llama, beir):
    from personarag.training.data import TrainingData, TrainingExample
    from personarag.training.llm_sft import load_tokenizer, pointwise_rows

    data = TrainingData.from_examples([
        TrainingExample("q", "what do mice eat", "d4", "Mice eat cheese.", 1.0, reasoning="It names their food."),
        TrainingExample("q", "what do mice eat", "d6", "Wind turbines.", 0.0),
        TrainingExample("q", "what do mice eat", "d9", "Mice eat seeds too.", 0.5),
    ])
    tokenizer = load_tokenizer(str(llama))
    fine = pointwise_rows(data, sft_config(tmp_path / "f", llama, beir, mode="fine", k=4), tokenizer)
    assert [r["completion"][0]["content"] for r in fine] == ["4", "0", "2"]
    reason = pointwise_rows(data, sft_config(tmp_path / "r", llama, beir, mode="reason", k=3), tokenizer)
    assert reason[0]["completion"][0]["content"] == "<think>It names their food.</think>\nScore: 3"
    assert "Score: N" in reason[0]["prompt"][-1]["content"]  # the reason-then-score template


def test_listwise_sft_distils_the_teachers_order(tmp_path, llama, beir):
    from personarag.rerankers.parsing import parse_permutation
    from personarag.training.llm_sft import listwise_rows, load_tokenizer, train_llm_sft

    config = sft_config(tmp_path / "lw", llama, beir, kind="listwise", teacher="qrels")
    rows = listwise_rows(config, load_tokenizer(str(llama)))
    assert rows and all("Rank the 3 passages" in r["prompt"][-1]["content"] for r in rows)
    # the qrels teacher puts the judged positive first: for q3 ("what do mice eat") that is d4, "Mice eat ..."
    q3 = [r for r in rows if "what do mice eat" in r["prompt"][-1]["content"]][0]
    order, parsed = parse_permutation(q3["completion"][0]["content"], 3)
    assert not parsed.problems
    lines = [line for line in q3["prompt"][-1]["content"].splitlines() if line.startswith("[")]
    assert lines[order[0]].startswith(f"[{order[0] + 1}] ") and "Mice eat cheese" in lines[order[0]]

    result = train_llm_sft(config)
    assert (result.output_dir / "adapter_config.json").is_file()
    prompt = q3["prompt"]
    base = answer_logprobs(f"transformers:{llama}", prompt, ["[1]", "[2]"])
    tuned = answer_logprobs(f"transformers:{llama}+{result.output_dir}", prompt, ["[1]", "[2]"])
    assert any(abs(base[a] - tuned[a]) > 1e-3 for a in base)
    reranked = registry.build(f"listwise:{llama}+{result.output_dir}", role="reranker", window=3, stride=1,
                              max_doc_tokens=16).rerank([mice_ranking()])[0]
    assert sorted(reranked.ids) == ["a", "b", "c"]


def test_grpo_runs_with_ranking_rewards_and_updates_the_adapter(tmp_path, llama, beir):
    from personarag.training.grpo import GRPOTrainConfig, build_prompts, train_grpo
    from personarag.training.llm_sft import load_tokenizer

    config = GRPOTrainConfig(output_dir=str(tmp_path / "grpo"), base=str(llama), dataset_dir=str(beir), window=3,
                             num_generations=2, batch_size=2, max_steps=2, max_completion_length=12,
                             max_doc_tokens=16, lora_r=4, learning_rate=5e-2, logging_steps=1, temperature=1.5)
    rows = build_prompts(config, load_tokenizer(str(llama)))
    assert all(len(r["relevance"]) == 3 and max(r["relevance"]) > 0 for r in rows)  # ensure_positive

    # A random model writes no permutation, so every sample gets the same ranking reward and GRPO's
    # advantage is 0; a length reward makes samples differ so the update must move the adapter.
    def length_reward(prompts=None, completions=(), **_):
        return [float(len(c[0]["content"] if isinstance(c, list) else c)) / 50 for c in completions]

    info = train_grpo(config, extra_rewards=[(length_reward, 1.0)])
    assert info["global_step"] == 2
    logged = info["reward_history"][0]
    assert "rewards/ndcg@10/mean" in logged and "rewards/format_listwise/mean" in logged
    assert 0.0 <= logged["rewards/ndcg@10/mean"] <= 1.0
    prompt = rows[0]["prompt"]
    base = answer_logprobs(f"transformers:{llama}", prompt, ["[1]", "[2]"])
    tuned = answer_logprobs(f"transformers:{llama}+{tmp_path / 'grpo'}", prompt, ["[1]", "[2]"])
    assert any(abs(base[a] - tuned[a]) > 1e-4 for a in base)


def test_grpo_config_checks():
    from personarag.training.grpo import GRPOTrainConfig

    with pytest.raises(InputError, match="multiple of num_generations"):
        GRPOTrainConfig(output_dir="o", base="b", dataset_dir="d", num_generations=4, batch_size=6)
    with pytest.raises(InputError, match="num_generations must be >= 2"):
        GRPOTrainConfig(output_dir="o", base="b", dataset_dir="d", num_generations=1, batch_size=2)
