"""Label-likelihood scoring, shared-prefix scoring, constrained permutations and the reranker
modes built on them, on tiny random Llamas with SmolLM2's tokenizer (issue 11)."""

from __future__ import annotations

import math
import string

import pytest

from personarag.errors import InputError
from personarag.llm import GenerationConfig, as_chat
from personarag.llm.labels import score_labels
from personarag.types import Document, Query, Ranking, ScoredDoc

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from personarag.llm.transformers_backend import TransformersLLM  # noqa: E402
from personarag.rerankers.listwise import ListwiseReranker  # noqa: E402
from personarag.rerankers.pointwise import PointwiseReranker  # noqa: E402
from personarag.rerankers.setwise import SetwiseReranker  # noqa: E402
from tests.llm_models import cache_root, smollm2_tokenizer_dir, tiny_llama  # noqa: E402

PROMPTS = [
    "Which genre fits the movie? Answer with one tag.",
    "Hello",
    [{"role": "system", "content": "You tag movies."}, {"role": "user", "content": "A space crew meets aliens. Tag?"}],
]
TAGS = ["sci-fi", "based on a book", "comedy", "action", "twist ending", "dystopia", "dark comedy", "classic", "thought-provoking",
        "social commentary", "fantasy", "violence", "true story", "psychology", "romance"]


@pytest.fixture(scope="module")
def tokenizer_dir(request, tmp_path_factory):
    return smollm2_tokenizer_dir(cache_root(request, tmp_path_factory))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tokenizer_dir):
    return tiny_llama(tmp_path_factory.mktemp("tiny-scoring"), tokenizer_dir)


@pytest.fixture(scope="module")
def llm(tiny_dir):
    torch.set_num_threads(1)
    model = TransformersLLM(str(tiny_dir), threads=1, cache_dir=None, max_batch_size=4)
    model.hf_model
    return model


def brute_force(llm: TransformersLLM, prompt, answer: str) -> float:
    """log P(answer | prompt) from one plain forward pass over prompt + answer, no batching or cache."""
    prompt_ids = llm.render(as_chat(prompt), thinking=False)
    answer_ids = llm.tokenizer(answer, add_special_tokens=False).input_ids
    with torch.inference_mode():
        logits = llm.hf_model(input_ids=torch.tensor([prompt_ids + answer_ids])).logits[0].float().log_softmax(-1)
    return sum(logits[len(prompt_ids) - 1 + t, token].item() for t, token in enumerate(answer_ids))


def ranking(n: int, qid: str = "q1") -> Ranking:
    docs = [ScoredDoc(Document(f"d{i}", f"passage number {i} about topic {i % 3} and words {i * 7}"), float(n - i)) for i in range(n)]
    return Ranking(Query(qid, "which passage is about topic 1?"), docs)


# ---- the primitive ------------------------------------------------------------------------------
@pytest.mark.parametrize("labels, prefix", [(["yes", "no", "Yes", "No"], ""), (list("ABCD"), ""), (list("123456789"), "["), (list("ABCDEFGHIJKL"), "[")])
def test_label_scores_equal_brute_force_per_label(llm, labels, prefix):
    results = score_labels(llm, PROMPTS, labels, prefix=prefix)
    for prompt, result in zip(PROMPTS, results):
        assert result.labels == tuple(labels)
        for label, value in zip(labels, result.logprobs):
            assert value == pytest.approx(brute_force(llm, prompt, prefix + label), abs=1e-5)
        probs = result.probabilities
        assert sum(probs) == pytest.approx(1.0) and probs.index(max(probs)) == result.best


def test_shared_prefix_scores_equal_unshared_and_brute_force(tiny_dir, llm):
    unshared = TransformersLLM(str(tiny_dir), threads=1, cache_dir=None, max_batch_size=3, shared_prefix=False)
    shared = llm.score(PROMPTS, TAGS)  # 15 answers in chunks of 4: the cache is re-sized and cropped between chunks
    reference = unshared.score(PROMPTS, TAGS)
    for a, b in zip(shared, reference):
        assert max(abs(a.logprobs[t] - b.logprobs[t]) for t in TAGS) < 1e-4
    assert shared[0].logprobs["based on a book"] == pytest.approx(brute_force(llm, PROMPTS[0], "based on a book"), abs=1e-4)
    # the answers really differ (the check above would pass on constant numbers otherwise)
    assert len({round(v, 3) for v in shared[0].logprobs.values()}) == len(TAGS)
    assert shared[0].usage.calls == 1


# ---- constrained permutations ---------------------------------------------------------------------
@pytest.mark.parametrize("labels", [list("123"), list("123456789"), list(string.ascii_uppercase[:12])])
def test_constrained_generation_is_always_a_permutation(llm, labels):
    completions = llm.permute(PROMPTS, labels)
    seen = set()
    for completion in completions:
        text = completion.text
        assert text.startswith("[") and text.endswith("]")
        parts = text[1:-1].split("] > [")
        assert sorted(parts) == sorted(labels)
        seen.add(text)
    assert len(seen) > 1  # the prompts steer the order: it is not a fixed pattern


def test_permute_without_support_says_which_backend():
    from personarag.testing import ScriptedLLM

    with pytest.raises(InputError, match="cannot constrain generation"):
        ScriptedLLM(responses=["x"]).permute(["hi"], ["A", "B"])


# ---- the reranker modes: always a valid permutation, never a fallback ------------------------------
def assert_valid(out: Ranking, given: Ranking) -> None:
    assert sorted(out.ids) == sorted(given.ids)
    assert not out.trace[-1].problems, out.trace[-1].problems


@pytest.mark.parametrize("debias", [None, "reverse", "rotate"])
def test_setwise_likelihood_always_chooses(llm, debias):
    given = ranking(9)
    reranker = SetwiseReranker(llm, c=3, top_k=4, choice="likelihood", debias=debias, max_doc_tokens=32)
    [out] = reranker.rerank([given])
    assert_valid(out, given)
    answers = out.trace[-1].info["answers"]
    assert answers and all(a["text"].startswith("likelihood A=") for a in answers)
    assert out.trace[-1].usage.completion_tokens == 0


def test_setwise_likelihood_picks_the_most_probable_label(llm):
    given = ranking(3)
    [out] = SetwiseReranker(llm, c=3, top_k=1, choice="likelihood", max_doc_tokens=32).rerank([given])
    reranker = SetwiseReranker(llm, c=3, top_k=1, max_doc_tokens=32)
    texts = reranker._texts(given.docs)
    block = reranker.template.render_docs((x, texts[s.doc.id]) for x, s in zip("ABC", given.docs))
    chat = reranker.template.render(query=given.query.text, documents=block, num=3, labels="A, B, C", first_label="A")
    values = [brute_force(llm, chat, x) for x in "ABC"]
    assert out.ids[0] == given.ids[values.index(max(values))]


@pytest.mark.parametrize("window, debias", [(5, None), (12, None), (5, "reverse"), (4, "rotate")])
def test_listwise_first_token_orders_each_window_by_label_probability(llm, window, debias):
    given = ranking(window)
    reranker = ListwiseReranker(llm, window=window, stride=window - 1, scoring="first-token", debias=debias, max_doc_tokens=32)
    [out] = reranker.rerank([given])
    assert_valid(out, given)
    assert out.trace[-1].usage.calls == (1 if debias is None else 2 if debias == "reverse" else window)
    if debias is None:  # one window: the order is the identifiers' probabilities, best first
        labels = [str(i + 1) for i in range(window)] if window <= 9 else list(string.ascii_uppercase[:window])
        texts = reranker._texts(given.docs)
        block = reranker.template.render_docs((x, texts[s.doc.id]) for x, s in zip(labels, given.docs))
        chat = reranker.template.render(query=given.query.text, documents=block, num=window, first_label=labels[0], second_label=labels[1], last_label=labels[-1])
        [scores] = score_labels(llm, [chat], labels, prefix="[")
        expected = sorted(range(window), key=lambda j: (-scores.logprobs[j], j))
        assert out.ids == [given.ids[j] for j in expected]
        assert out.ids != given.ids
        [answer] = out.trace[-1].info["answers"]
        assert answer["text"].startswith(f"first-token [{labels[0]}]=")


@pytest.mark.parametrize("window, debias", [(6, None), (11, None), (5, "reverse")])
def test_listwise_constrained_is_always_a_full_permutation(llm, window, debias):
    given = ranking(window + 3)
    reranker = ListwiseReranker(llm, window=window, stride=window - 2, constrained=True, debias=debias, max_doc_tokens=24)
    [out] = reranker.rerank([given])
    assert_valid(out, given)
    for answer in out.trace[-1].info["answers"]:
        assert answer["text"].count("[") == answer["text"].count("]") >= 2


def test_unconstrained_tiny_model_needs_the_fallback(llm):
    """The contrast that makes the tests above meaningful: a random model's free text is no permutation."""
    given = ranking(6)
    [out] = ListwiseReranker(llm, window=6, stride=3, max_doc_tokens=24, max_new_tokens=12).rerank([given])
    assert out.trace[-1].problems


def test_modes_are_checked(llm):
    with pytest.raises(InputError, match="choice"):
        SetwiseReranker(llm, choice="vote")
    with pytest.raises(InputError, match="debias"):
        ListwiseReranker(llm, debias="shuffle")
    with pytest.raises(InputError, match="first-token"):
        ListwiseReranker(llm, scoring="first-token", constrained=True)
    with pytest.raises(InputError, match="26"):
        ListwiseReranker(llm, window=30, stride=10, scoring="first-token")


# ---- greedy by default, thinking off when scoring ------------------------------------------------------
def test_greedy_is_the_default_everywhere(llm):
    from personarag.generators.lamp import LaMPGenerator
    from personarag.rerankers.groupwise import GroupwiseReranker

    assert GenerationConfig().temperature == 0.0 and GenerationConfig().greedy
    stages = [PointwiseReranker(llm), SetwiseReranker(llm), ListwiseReranker(llm), ListwiseReranker(llm, constrained=True),
              GroupwiseReranker(llm), LaMPGenerator(llm, task="LaMP-2")]
    assert all(s.generation.temperature == 0.0 for s in stages)
    [completion] = llm.generate([PROMPTS[0]], GenerationConfig(max_new_tokens=1))  # the default config: greedy
    ids = llm.render(as_chat(PROMPTS[0]))
    with torch.inference_mode():
        best = llm.hf_model(input_ids=torch.tensor([ids])).logits[0, -1].argmax().item()
    assert completion.text == llm.tokenizer.decode([best])
    config = GenerationConfig(max_new_tokens=8)
    assert [c.text for c in llm.generate(PROMPTS, config)] == [c.text for c in llm.generate(PROMPTS, config)]


def test_scoring_renders_with_thinking_off(tmp_path, tokenizer_dir):
    import json

    path = tiny_llama(tmp_path / "thinker", tokenizer_dir)
    config = json.loads((path / "tokenizer_config.json").read_text())
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n"
                "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}")
    (path / "chat_template.jinja").unlink(missing_ok=True)
    config["chat_template"] = template
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    model = TransformersLLM(str(path), threads=1, cache_dir=None)
    chat = as_chat("Is it relevant?")
    assert "<think>" in model.tokenizer.decode(model.render(chat, thinking=False))
    assert "<think>" not in model.tokenizer.decode(model.render(chat))
    [scored] = model.score([chat], ["yes"])
    ids = model.render(chat, thinking=False) + model.tokenizer("yes", add_special_tokens=False).input_ids
    with torch.inference_mode():
        logits = model.hf_model(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
    assert scored.logprobs["yes"] == pytest.approx(logits[-2, ids[-1]].item(), abs=1e-5)
    assert not math.isnan(scored.logprobs["yes"])


# ---- the chance-level check: a model that can tell relevant documents apart is followed --------------
RELEVANT_WORDS = ["cat", "kitten", "purr", "whiskers", "feline", "meow"]
OTHER_WORDS = ["stock", "market", "bank", "price", "bond", "trader"]
FILLER = ["the", "a", "small", "report", "about", "today", "many", "people", "say", "new", "old", "story", "and", "with"]


def toy_doc(rng, words: list[str], length: int) -> str:
    # the telling words come first and the filler after, so a cut from the wrong side would lose them
    return " ".join(rng.sample(words, 2) + [rng.choice(FILLER) for _ in range(length)])


def test_a_model_trained_to_say_yes_to_relevant_documents_ranks_them_first(tmp_path, tokenizer_dir):
    """Fine-tune a tiny Llama for a few steps on rendered pointwise prompts (relevant -> "yes",
    other -> "no"), then rerank unseen documents given in the worst order: the relevant ones
    must come first. Documents of different lengths share padded batches and are cut to
    max_doc_tokens, so a wrong padding side, truncation side, token id or score direction fails."""
    import random

    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(str(tmp_path / "judge"))
    tokenizer.save_pretrained(str(tmp_path / "judge"))
    llm = TransformersLLM(str(tmp_path / "judge"), threads=1, cache_dir=None, max_batch_size=4)
    reranker = PointwiseReranker(llm, mode="yesno", max_doc_tokens=12)
    model = llm.hf_model
    rng = random.Random(0)
    yes, no = (llm.tokenizer(w, add_special_tokens=False).input_ids[0] for w in ("yes", "no"))

    examples = []
    for _ in range(48):
        relevant = rng.random() < 0.5
        text = reranker._doc_text(Document("x", toy_doc(rng, RELEVANT_WORDS if relevant else OTHER_WORDS, rng.randint(2, 30))))
        chat = reranker.template.render(query="tell me about cats", text=text, k=3)
        examples.append((llm.render(chat, thinking=False), yes if relevant else no))
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(60):
        batch = rng.sample(examples, 16)
        ids, mask, positions = llm._padded([e[0] for e in batch])
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1).logits[:, -1, :]
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor([e[1] for e in batch]))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    assert loss.item() < 0.1

    rankings = []
    for q in range(3):
        others = [Document(f"q{q}-o{i}", toy_doc(rng, OTHER_WORDS, rng.randint(2, 40))) for i in range(6)]
        relevant = [Document(f"q{q}-r{i}", toy_doc(rng, RELEVANT_WORDS, rng.randint(2, 40))) for i in range(2)]
        docs = others + relevant  # the relevant documents last: the reranker must move them up
        rankings.append(Ranking(Query(f"q{q}", "tell me about cats"), [ScoredDoc(d, float(len(docs) - i)) for i, d in enumerate(docs)]))
    for out in reranker.rerank(rankings):
        assert {d.doc.id.split("-")[1][0] for d in out.docs[:2]} == {"r"}, [(d.doc.id, round(d.score, 3)) for d in out.docs]
        assert out.docs[0].score > 0.5 > out.docs[-1].score  # the score is P(yes): high for relevant
    # one prompt at a time gives the same scores as the padded batches
    chats = [reranker.template.render(query="tell me about cats", text=reranker._doc_text(s.doc), k=3) for s in rankings[0].docs]
    batched = llm.score(chats, ["yes", "no"])
    single = [llm.score([c], ["yes", "no"])[0] for c in chats]
    assert max(abs(a.logprobs[x] - b.logprobs[x]) for a, b in zip(batched, single) for x in ("yes", "no")) < 1e-4


def test_oracle_answers_the_label_modes():
    """The qrels oracle (for benchmarks' oracle rows) reads label scores and permutations like a perfect model."""
    from personarag.testing import OracleLLM

    docs = [Document(f"d{i}", f"document number {i} talks about subject {i} in some detail here") for i in range(14)]
    query = Query("q", "find the right one")
    oracle = OracleLLM(docs, [query], {"q": {"d13": 2, "d9": 1}})
    given = Ranking(query, [ScoredDoc(d, 14.0 - i) for i, d in enumerate(docs)])
    for reranker in [SetwiseReranker(oracle, choice="likelihood", c=3, top_k=3), SetwiseReranker(oracle, choice="likelihood", debias="rotate"),
                     ListwiseReranker(oracle, scoring="first-token", window=12, stride=6), ListwiseReranker(oracle, constrained=True, window=5, stride=3),
                     ListwiseReranker(oracle, constrained=True, window=12, stride=6, debias="reverse")]:
        [out] = reranker.rerank([given])
        assert out.ids[:3] == ["d13", "d9", "d0"] and not out.trace[-1].problems
