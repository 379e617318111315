"""Contextual calibration and length normalisation of the label choice (issue 12 item 2):
exact arithmetic on a scripted LLM, and the per-token means on a tiny random Llama against a
brute-force forward pass."""

from __future__ import annotations

import math

import pytest

from conftest import FIXTURES
from personarag import InputError, registry
from personarag.evaluation.lamp import load_lamp
from personarag.generators.lamp import LaMPGenerator
from personarag.generators.lamp_prompts import LampPromptBuilder
from personarag.llm.labels import calibrate, choose_labels, label_prior, normalised
from personarag.testing import ScriptedLLM
from personarag.testing.scripted import chat_text
from personarag.types import Ranking, StageTrace

LAMP = FIXTURES / "lamp"
RATINGS = ("1", "2", "3", "4", "5")


def lamp3():
    return load_lamp("LaMP-3", LAMP / "LaMP_3" / "dev_questions.json", LAMP / "LaMP_3" / "dev_outputs.json")


def rankings():
    return [Ranking(e.query, [], (StageTrace("retrieve"),)) for e in lamp3().examples]


def scripted(real: dict[str, float], content_free: dict[str, float]) -> ScriptedLLM:
    """Scores `content_free` under a prompt whose review is "N/A", `real` under every other prompt."""
    return ScriptedLLM(scores=lambda chat, answer: (content_free if "review: N/A" in chat_text(chat) else real)[answer])


def test_calibrate_divides_by_the_prior_and_renormalises():
    assert calibrate([0.5, 0.3, 0.2], [0.5, 0.3, 0.2]) == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    # p / q = (1, 2, 0.5) -> (1/3.5, 2/3.5, 0.5/3.5)
    assert calibrate([0.4, 0.4, 0.2], [0.4, 0.2, 0.4]) == pytest.approx((1 / 3.5, 2 / 3.5, 0.5 / 3.5))
    with pytest.raises(InputError, match="prior over 2 labels"):
        calibrate([0.5, 0.3, 0.2], [0.5, 0.5])
    with pytest.raises(InputError, match="non-negative"):
        calibrate([0.5, 0.5], [-0.1, 1.1])


def test_a_prior_equal_to_the_raw_distribution_gives_a_uniform_result():
    raw = {"1": -3.0, "2": -2.5, "3": -0.5, "4": -1.0, "5": -2.0}
    llm = scripted(raw, raw)
    outputs = LaMPGenerator(llm, task="LaMP-3", answer_mode="choose", calibration="content-free").generate(rankings())
    for output in outputs:
        info = output.trace[-1].info
        assert list(info["calibrated"].values()) == pytest.approx([0.2] * 5)
        assert list(info["prior"].values()) == pytest.approx(list(normalised(list(raw.values()))))
        assert info["logprobs"] == raw
        assert output.text == "1"  # all tied: the first label
    raw_outputs = LaMPGenerator(llm, task="LaMP-3", answer_mode="choose").generate(rankings())
    assert [o.text for o in raw_outputs] == ["3", "3", "3"]


def test_the_choice_flips_when_the_prior_favours_the_raw_winner():
    real = {"1": -4.0, "2": -4.0, "3": -4.0, "4": math.log(0.3), "5": math.log(0.6)}
    prior = {"1": math.log(0.05), "2": math.log(0.05), "3": math.log(0.05), "4": math.log(0.15), "5": math.log(0.7)}
    llm = scripted(real, prior)
    assert [o.text for o in LaMPGenerator(llm, task="LaMP-3", answer_mode="choose").generate(rankings())] == ["5"] * 3
    generator = LaMPGenerator(llm, task="LaMP-3", answer_mode="choose", calibration="content-free")
    outputs = generator.generate(rankings())
    assert [o.text for o in outputs] == ["4"] * 3
    # by hand: p(4)/q(4) = (0.3/Z)/(0.15/Zq) beats p(5)/q(5) = (0.6/Z)/(0.7/Zq); 0.3/0.15 = 2 > 0.6/0.7
    calibrated = outputs[0].trace[-1].info["calibrated"]
    p = normalised(list(real.values()))
    q = normalised(list(prior.values()))
    weights = [a / b for a, b in zip(p, q)]
    assert list(calibrated.values()) == pytest.approx([w / sum(weights) for w in weights])


def test_the_prior_is_computed_once_per_content_free_prompt_and_reused():
    llm = scripted({r: -float(r) for r in RATINGS}, {r: -1.0 for r in RATINGS})
    generator = LaMPGenerator(llm, task="LaMP-3", answer_mode="choose", calibration="content-free",
                              content_free=["N/A", "", "[MASK]"], batch_size=1)
    generator.generate(rankings())
    generator.generate(rankings())
    content_free = [chat_text(c) for c in llm.seen if "review: N/A" in chat_text(c) or "review: \n" in chat_text(c)
                    or "review: [MASK]" in chat_text(c)]
    assert len(content_free) == 3  # three fillers, scored once for six prompts in six batches
    assert len(llm.seen) == 3 + 6
    assert content_free[0] == ("What is the score of the following review on a scale of 1 to 5? just answer with 1, 2, 3, 4, "
                               "or 5 without further explanation. review: N/A\n"
                               "Just answer with 1, 2, 3, 4, or 5 without further explanation.")


def test_label_prior_averages_the_content_free_distributions():
    table = {"a": {"x": math.log(0.8), "y": math.log(0.2)}, "b": {"x": math.log(0.4), "y": math.log(0.6)}}
    llm = ScriptedLLM(scores=lambda chat, answer: table[chat_text(chat)][answer])
    assert label_prior(llm, ["a", "b"], ["x", "y"]) == pytest.approx((0.6, 0.4))
    with pytest.raises(InputError, match="no label"):
        label_prior(ScriptedLLM(scores={}), ["a"], ["x", "y"])


def test_length_norm_divides_by_the_answer_tokens():
    # ScriptedLLM counts whitespace words: "social commentary" is 2 tokens
    llm = ScriptedLLM(scores={"sci-fi": -2.0, "social commentary": -3.0})
    [summed] = choose_labels(llm, ["p"], ["sci-fi", "social commentary"])
    [mean] = choose_labels(llm, ["p"], ["sci-fi", "social commentary"], length_norm=True)
    assert summed.values == (-2.0, -3.0) and summed.label == "sci-fi"
    assert mean.values == (-2.0, -1.5) and mean.label == "social commentary"
    assert mean.raw == (-2.0, -3.0)


def test_the_content_free_prompt_keeps_the_question_and_falls_back_to_the_whole_input():
    builder = LampPromptBuilder("LaMP-2")
    text = builder.content_free("Which tag? tags: [a, b] description: A robot wakes up.", "N/A")
    assert text.startswith("Which tag? tags: [a, b] description: N/A\nAnswer with exactly one tag")
    assert LampPromptBuilder("LaMP-1").content_free("anything at all", "N/A").startswith("N/A\nJust answer with [1] or [2]")


def test_options_are_checked_and_travel_in_the_spec():
    llm = ScriptedLLM(scores={})
    with pytest.raises(InputError, match="calibration must be one of"):
        LaMPGenerator(llm, task="LaMP-3", answer_mode="choose", calibration="platt")
    with pytest.raises(InputError, match="answer_mode='choose'"):
        LaMPGenerator(llm, task="LaMP-3", calibration="content-free")
    with pytest.raises(InputError, match="content_free"):
        LaMPGenerator(llm, task="LaMP-3", answer_mode="choose", content_free="N/A")
    built = registry.build({"spec": "lamp:scripted:x", "params": {"task": "LaMP-3", "answer_mode": "choose",
                                                                  "calibration": "content-free", "length_norm": True}})
    assert (built.calibration, built.length_norm) == ("content-free", True)
    assert built.config()["params"]["calibration"] == "content-free"


# ---- a real tokenizer: per-token means against a brute-force forward pass ----------------------
TAGS = ["sci-fi", "based on a book", "comedy", "twist ending", "social commentary", "true story"]


def test_length_norm_equals_brute_force_means_on_a_tiny_llama(request, tmp_path_factory):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from personarag.llm import as_chat
    from personarag.llm.transformers_backend import TransformersLLM
    from tests.llm_models import cache_root, smollm2_tokenizer_dir, tiny_llama

    torch.set_num_threads(1)
    tokenizer_dir = smollm2_tokenizer_dir(cache_root(request, tmp_path_factory))
    path = tiny_llama(tmp_path_factory.mktemp("tiny-calibration"), tokenizer_dir)
    llm = TransformersLLM(str(path), threads=1, cache_dir=None, max_batch_size=4)
    prompts = ["Which tag fits a movie about a robot? Answer with one tag.", "Tag this: a clumsy chef on a boat."]

    def brute_mean(prompt: str, answer: str) -> float:
        prompt_ids = llm.render(as_chat(prompt), thinking=False)
        answer_ids = llm.tokenizer(answer, add_special_tokens=False).input_ids
        with torch.inference_mode():
            logits = llm.hf_model(input_ids=torch.tensor([prompt_ids + answer_ids])).logits[0].float().log_softmax(-1)
        return sum(logits[len(prompt_ids) - 1 + t, tok].item() for t, tok in enumerate(answer_ids)) / len(answer_ids)

    chosen = choose_labels(llm, prompts, TAGS, length_norm=True)  # shared-prefix scoring
    for prompt, choice in zip(prompts, chosen):
        expected = [brute_mean(prompt, tag) for tag in TAGS]
        assert list(choice.values) == pytest.approx(expected, abs=1e-5)
        counts = [len(llm.answer_ids(tag)) for tag in TAGS]
        assert list(choice.values) == pytest.approx([r / n for r, n in zip(choice.raw, counts)], abs=1e-9)
        assert max(counts) > 1  # the normalisation really divides something
        assert choice.label == TAGS[max(range(len(TAGS)), key=lambda j: (expected[j], -j))]
    # calibrated + length-normalised through the generator: the prior uses the same per-token values
    data = load_lamp("LaMP-2", LAMP / "LaMP_2" / "dev_questions.json", LAMP / "LaMP_2" / "dev_outputs.json")
    generator = LaMPGenerator(llm, task="LaMP-2", answer_mode="choose", calibration="content-free", length_norm=True)
    [output] = generator.generate([Ranking(data.examples[0].query, [])])
    info = output.trace[-1].info
    labels = list(info["logprobs"])
    prompt = generator.builder.content_free(data.examples[0].query.text, "N/A")
    prior = normalised([brute_mean(prompt, label) for label in labels])
    assert list(info["prior"].values()) == pytest.approx(prior, abs=1e-5)
    p = normalised([brute_mean(output.prompt, label) for label in labels])
    weights = [a / b for a, b in zip(p, prior)]
    assert output.text == labels[max(range(len(labels)), key=lambda j: weights[j])]
