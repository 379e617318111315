"""The transformers backend on tiny random Llamas (fast) and on the real SmolLM2 GGUF (slow)."""

from __future__ import annotations

import logging
import time

import pytest

from personarag import InputError, registry
from personarag.llm import GenerationConfig, Message, as_chat, load_llm

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from personarag.llm.transformers_backend import TransformersLLM  # noqa: E402
from tests.llm_models import cache_root, smollm2_gguf, smollm2_tokenizer_dir, tiny_llama  # noqa: E402

PROMPTS = [
    "Hello",
    "What is the capital of France? Answer in one word, please, and nothing else at all.",
    "a b c",
    [{"role": "system", "content": "You rank documents."}, {"role": "user", "content": "Is this relevant?"}],
    "Write a haiku about retrieval.",
]


@pytest.fixture(scope="session")
def tokenizer_dir(request, tmp_path_factory):
    return smollm2_tokenizer_dir(cache_root(request, tmp_path_factory))


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tokenizer_dir):
    return tiny_llama(tmp_path_factory.mktemp("tiny-llama"), tokenizer_dir)


@pytest.fixture(scope="session")
def llm(tiny_dir):
    model = TransformersLLM(str(tiny_dir), threads=1, cache_dir=None, max_batch_size=2)
    model.hf_model  # load once
    return model


def test_batched_greedy_generation_equals_one_by_one(llm):
    config = GenerationConfig(max_new_tokens=10)
    batched = llm.generate(PROMPTS, config)
    single = [llm.generate([p], config)[0] for p in PROMPTS]
    assert [c.text for c in batched] == [c.text for c in single]
    assert len({c.text for c in batched}) == len(PROMPTS)  # the prompts really steer the output
    for prompt, completion in zip(PROMPTS, batched):
        assert completion.usage.calls == 1 and 1 <= completion.usage.completion_tokens <= 10
        assert completion.usage.prompt_tokens == len(llm.render(as_chat(prompt)))
    assert all(len(c.texts) == 1 for c in batched)
    assert llm.generate(["Hello"], GenerationConfig(max_new_tokens=10, n=3))[0].texts == (batched[0].text,) * 3


def test_stop_strings_cut_the_text(llm):
    [full] = llm.generate(["Hello"], GenerationConfig(max_new_tokens=12))
    stop = full.text.strip()[3:6]
    [cut] = llm.generate(["Hello"], GenerationConfig(max_new_tokens=12, stop=(stop,)))
    assert cut.text == full.text[: full.text.index(stop)]
    assert cut.usage.completion_tokens < full.usage.completion_tokens


def test_sampling_is_seeded_per_prompt(llm):
    config = GenerationConfig(max_new_tokens=8, temperature=1.0, n=3, seed=7)
    [a] = llm.generate(["Hello"], config)
    again = llm.generate(["a b c", "Hello"], config)[1]  # another batch composition
    assert a.texts == again.texts and len(a.texts) == 3 and len(set(a.texts)) == 3
    [other] = llm.generate(["Hello"], GenerationConfig(max_new_tokens=8, temperature=1.0, n=3, seed=8))
    assert other.texts != a.texts


def _manual_logprob(llm, chat, answer):
    """log P(answer | prompt) from one unpadded forward pass, independent of the backend's batching."""
    prompt = llm.render(chat)
    answer_ids = llm.answer_ids(answer)
    ids = torch.tensor([prompt + answer_ids])
    with torch.inference_mode():
        logprobs = llm.hf_model(input_ids=ids).logits[0].float().log_softmax(-1)
    return sum(logprobs[len(prompt) - 1 + k, t].item() for k, t in enumerate(answer_ids))


def test_single_token_scores_match_an_unpadded_forward_pass(llm):
    batched = llm.score(PROMPTS, ["yes", "no"])
    single = [llm.score([p], ["yes", "no"])[0] for p in PROMPTS]
    for prompt, b, s in zip(PROMPTS, batched, single):
        chat = as_chat(prompt)
        for answer in ("yes", "no"):
            assert b.logprobs[answer] == pytest.approx(s.logprobs[answer], abs=1e-4)
            assert b.logprobs[answer] == pytest.approx(_manual_logprob(llm, chat, answer), abs=1e-4)
    assert len({round(b.logprobs["yes"], 3) for b in batched}) == len(PROMPTS)


def test_multi_token_answers_sum_token_logprobs(llm):
    answers = ["yes", "no thanks", "maybe later on"]
    batched = llm.score(PROMPTS, answers)
    for prompt, b in zip(PROMPTS, batched):
        chat = as_chat(prompt)
        for answer in answers:
            assert b.logprobs[answer] == pytest.approx(_manual_logprob(llm, chat, answer), abs=1e-4)
    fast = llm.score(PROMPTS, ["yes"])
    assert [f.logprobs["yes"] for f in fast] == pytest.approx([b.logprobs["yes"] for b in batched], abs=1e-4)


def test_model_without_chat_template_or_pad_token(tmp_path, tokenizer_dir, caplog):
    path = tiny_llama(tmp_path / "plain", tokenizer_dir, chat_template=False, pad_token=False)
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(str(path)).pad_token is None
    plain = TransformersLLM(str(path), cache_dir=None, max_batch_size=4)
    with caplog.at_level(logging.WARNING):
        assert not plain.uses_chat_template
    assert "no chat template" in caplog.text
    assert plain.tokenizer.pad_token == plain.tokenizer.eos_token
    batched = plain.generate(PROMPTS[:3], GenerationConfig(max_new_tokens=5))
    assert [c.text for c in batched] == [plain.generate([p], GenerationConfig(max_new_tokens=5))[0].text for p in PROMPTS[:3]]
    ids = plain.render((Message("system", "S"), Message("user", "hi")))
    assert plain.tokenizer.decode(ids) == "system: S\nuser: hi\nassistant:"
    [c] = plain.generate(["hi"], GenerationConfig(max_new_tokens=4))
    [s] = plain.score(["hi"], ["yes", "no"])
    assert c.usage.completion_tokens >= 1 and s.logprobs["yes"] < 0 and s.logprobs["no"] < 0


def test_overflow_cuts_the_start_of_the_last_user_message_or_raises(tiny_dir):
    small = TransformersLLM(str(tiny_dir), cache_dir=None, max_context_tokens=60)
    long_text = " ".join(f"word{i}" for i in range(200)) + " FINAL QUESTION"
    [c] = small.generate([long_text], GenerationConfig(max_new_tokens=10))
    assert c.usage.prompt_tokens + 10 <= 60 and c.usage.prompt_tokens > 40
    rendered = small.tokenizer.decode(small._fit((Message("user", long_text),), 10))
    assert "FINAL QUESTION" in rendered and "word0 " not in rendered
    strict = TransformersLLM(str(tiny_dir), cache_dir=None, max_context_tokens=60, on_overflow="error")
    with pytest.raises(InputError, match="exceeds max_context_tokens=60"):
        strict.score([long_text], ["yes"])


def test_count_tokens_and_truncate_use_the_tokenizer(llm):
    text = "Personalized retrieval-augmented generation for everyone"
    n = llm.count_tokens(text)
    assert n == len(llm.tokenizer(text, add_special_tokens=False).input_ids) and n > 4
    cut = llm.truncate(text, 3)
    assert text.startswith(cut) and llm.count_tokens(cut) == 3
    assert llm.truncate(text, 1000) == text


def test_dtype_option(tiny_dir, llm):
    half = TransformersLLM(str(tiny_dir), dtype="bfloat16", cache_dir=None)
    assert half.hf_model.dtype == torch.bfloat16 and llm.hf_model.dtype == torch.float32
    [s] = half.score(["Hello"], ["yes"])
    assert s.logprobs["yes"] == pytest.approx(llm.score(["Hello"], ["yes"])[0].logprobs["yes"], abs=0.5)
    with pytest.raises(InputError, match="dtype must be auto or one of"):
        TransformersLLM(str(tiny_dir), dtype="int3", cache_dir=None).hf_model


def test_threads_option_sets_torch_threads(tiny_dir):
    before = torch.get_num_threads()
    try:
        TransformersLLM(str(tiny_dir), threads=2, cache_dir=None).hf_model
        assert torch.get_num_threads() == 2
        TransformersLLM(str(tiny_dir), threads=1, cache_dir=None).hf_model
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_disk_cache_serves_a_second_run_and_tracks_the_weights(tmp_path, tokenizer_dir):
    path = tiny_llama(tmp_path / "m", tokenizer_dir)
    first = TransformersLLM(str(path), cache_dir=str(tmp_path / "cache"))
    out1 = first.generate(PROMPTS[:3], GenerationConfig(max_new_tokens=6))
    second = TransformersLLM(str(path), cache_dir=str(tmp_path / "cache"))
    out2 = second.generate(PROMPTS[:3], GenerationConfig(max_new_tokens=6))
    assert [c.text for c in out2] == [c.text for c in out1] and all(c.cached for c in out2)
    assert second._hf is None  # the model never had to load
    assert second.usage_total.calls == 0 and second.usage_total.cached_calls == 3
    tiny_llama(path, tokenizer_dir, seed=1)  # new weights in the same folder
    third = TransformersLLM(str(path), cache_dir=str(tmp_path / "cache"))
    assert not third.generate(PROMPTS[:1], GenerationConfig(max_new_tokens=6))[0].cached


def test_load_llm_and_config_round_trip(tiny_dir):
    built = load_llm(f"transformers:{tiny_dir}", threads=1, cache_dir=None)
    assert isinstance(built, TransformersLLM) and built.model_name == str(tiny_dir.resolve())
    rebuilt = registry.build_from_config(built.config(), role="llm")
    assert rebuilt.params == built.params == {"model": str(tiny_dir), "threads": 1, "cache_dir": None}
    assert isinstance(load_llm(str(tiny_dir), cache_dir=None), TransformersLLM)


@pytest.fixture(scope="module")
def gguf_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("gguf-cache")


@pytest.mark.slow
def test_gguf_converts_once_then_loads_from_the_cache(gguf_cache, caplog):
    gguf = smollm2_gguf()
    first = TransformersLLM(str(gguf), threads=1, cache_dir=None, gguf_cache_dir=str(gguf_cache))
    with caplog.at_level("WARNING", logger="personarag.llm.hf_loading"):
        first.hf_model
    converted = list(gguf_cache.iterdir())
    # the one conversion says where the copy goes and how to move it
    [warning] = [r.getMessage() for r in caplog.records if r.name == "personarag.llm.hf_loading"]
    assert str(converted[0]) in warning and "gguf_cache_dir" in warning and "PERSONARAG_CACHE_DIR" in warning
    caplog.clear()
    assert len(converted) == 1 and (converted[0] / "model.safetensors").is_file()
    assert "quantization_config" not in (converted[0] / "config.json").read_text()
    start = time.perf_counter()
    second = TransformersLLM(str(gguf), threads=1, cache_dir=None, gguf_cache_dir=str(gguf_cache))
    second.hf_model
    reload_seconds = time.perf_counter() - start
    assert not [r for r in caplog.records if r.name == "personarag.llm.hf_loading" and r.levelname == "WARNING"]
    print(f"GGUF first load {first.load_seconds:.1f} s, cached load {reload_seconds:.1f} s")
    assert reload_seconds < first.load_seconds / 2
    prompt = ["Name one colour of the sky."]
    assert second.generate(prompt, GenerationConfig(max_new_tokens=8))[0].text == first.generate(prompt, GenerationConfig(max_new_tokens=8))[0].text


@pytest.mark.slow
def test_real_smollm2_answers_sensibly_and_scores_yes_over_no(gguf_cache):
    llm = TransformersLLM(str(smollm2_gguf()), threads=1, cache_dir=None, gguf_cache_dir=str(gguf_cache))
    [answer] = llm.generate(["What is the capital of France? Answer with the city name only."], GenerationConfig(max_new_tokens=16))
    print(f"answer: {answer.text!r}, {answer.usage}")
    assert "paris" in answer.text.lower()
    [fact] = llm.score(["Is Paris the capital of France? Answer yes or no."], ["yes", "no"])
    print(f"Paris question: log P(yes) = {fact.logprobs['yes']:.3f}, log P(no) = {fact.logprobs['no']:.3f}")
    assert fact.logprobs["yes"] > fact.logprobs["no"]
    # what a pointwise reranker uses: the yes-no margin is larger for the relevant document
    template = "Query: how do cats purr?\nDocument: {}\nIs the document relevant to the query? Answer yes or no."
    relevant, unrelated = llm.score(
        [
            template.format("Cats purr by rapidly twitching the muscles of their larynx while breathing, which makes the vocal folds vibrate."),
            template.format("The stock market fell by two percent on Monday after interest rates rose."),
        ],
        ["yes", "no"],
    )
    margins = [s.logprobs["yes"] - s.logprobs["no"] for s in (relevant, unrelated)]
    print(f"yes-no margin: relevant {margins[0]:.3f}, unrelated {margins[1]:.3f}")
    assert margins[0] > margins[1] + 0.3
