"""LaMP prompts under a token budget, and the LaMP / RAG generators over a scripted LLM."""

from __future__ import annotations

import re

import pytest

from conftest import FIXTURES
from personarag import InputError, Pipeline, registry
from personarag.evaluation.lamp import load_lamp
from personarag.prompts.budget import Item, TokenCounter, fit_items
from personarag.generators.lamp import LaMPGenerator
from personarag.generators.lamp_prompts import LampPromptBuilder
from personarag.generators.rag import RAGGenerator
from personarag.testing import ScriptedLLM
from personarag.types import Document, Query, Ranking, ScoredDoc, StageTrace, User

LAMP = FIXTURES / "lamp"


def lamp(number: int):
    return load_lamp(f"LaMP-{number}", LAMP / f"LaMP_{number}" / "dev_questions.json", LAMP / f"LaMP_{number}" / "dev_outputs.json")


def test_items_are_rendered_per_task_in_the_paper_style():
    q3 = lamp(3).examples[0].query
    text = LampPromptBuilder("LaMP-3").build("Rate: broke fast.", q3.user.history[:2]).text
    assert text == (
        '"1" is the score for "The tuner stopped working within a week.", '
        '"4" is the score for "Good strap, comfortable on long gigs.". Rate: broke fast.\n'
        "Just answer with 1, 2, 3, 4, or 5 without further explanation."
    )
    q2 = lamp(2).examples[2].query
    text = LampPromptBuilder("LaMP-2").build("Tag it.", q2.user.history[:1]).text
    assert text.startswith('the tag for the movie: "A magician\'s final trick reveals a hidden twin." is "twist ending". Tag it.')
    assert text.endswith("from this list and nothing else: sci-fi, based on a book, comedy, action, twist ending, dystopia, "
                         "dark comedy, classic, psychology, fantasy, romance, thought-provoking, social commentary, violence, true story.")
    q5 = lamp(5).examples[1].query
    assert LampPromptBuilder("LaMP-5").build("Abstract.", q5.user.history).text.startswith(
        '"Tiling Strategies for Dense Kernels" is a title for "We tile dense kernels to fit in shared memory.". '
        "Following the given patterns Abstract."
    )


def test_lamp1_inserts_the_profile_titles_after_the_paper_title():
    q1 = lamp(1).examples[0].query
    text = LampPromptBuilder("LaMP-1").build(q1.text, q1.user.history).text
    assert text.startswith(
        'For an author who has written the paper with the title "Dense passage retrieval revisited", and '
        '"Sparse retrieval with learned term weights", and "Query expansion for ad hoc search", which reference'
    )


def test_no_profile_gives_the_input_and_instruction_only():
    assert LampPromptBuilder("LaMP-4").build("Generate a headline: x", []).text == "Generate a headline: x\nAnswer with the headline only."


def _docs(lengths):
    return [Document(f"d{i}", " ".join(f"w{i}x{j}" for j in range(n)), meta={"score": "3"}) for i, n in enumerate(lengths)]


def test_budget_cuts_long_texts_and_passes_unused_share_on():
    builder = LampPromptBuilder("LaMP-3", max_prompt_tokens=60, min_item_tokens=8)
    fit = builder.build("rate this", _docs([3, 40, 40]))
    bare = builder.counter.count(builder.build("rate this", []).text)
    assert fit.tokens <= 60
    assert fit.used == ("d0", "d1", "d2") and fit.dropped == ()
    assert fit.truncated == ("d1", "d2")  # d0 is short and kept whole; what it left over went to d1 and d2
    assert "w0x2" in fit.text and "w1x39" not in fit.text and "w2x39" not in fit.text
    # d1 got an equal share of what d0 left: its 40 words were cut to the same length as d2's, give or take one
    kept = [len(re.findall(rf"\bw{i}x\d+", fit.text)) for i in (1, 2)]
    assert abs(kept[0] - kept[1]) <= 1 and kept[0] > 5
    assert bare < fit.tokens


def test_budget_drops_lowest_ranked_items_first():
    builder = LampPromptBuilder("LaMP-3", max_prompt_tokens=50, min_item_tokens=10)
    fit = builder.build("rate this", _docs([30, 30, 30, 30]))
    assert fit.tokens <= 50
    assert fit.used == ("d0", "d1", "d2") and fit.dropped == ("d3",)
    assert fit.problems == ("1 of 4 items dropped to fit 50 tokens",)


def test_input_over_budget_is_cut_and_no_item_used():
    builder = LampPromptBuilder("LaMP-3", max_prompt_tokens=20)
    fit = builder.build(" ".join(f"in{j}" for j in range(50)), _docs([5]))
    assert fit.input_truncated and fit.used == () and fit.dropped == ("d0",)
    assert fit.tokens <= 20 and fit.text.endswith("without further explanation.")


def test_budget_uses_the_llm_tokenizer_when_given():
    class CharLLM(ScriptedLLM):  # one token per character: budgets bite much sooner than in words
        def count_tokens(self, text):
            return len(text)

        def truncate(self, text, max_tokens):
            return text[:max_tokens]

    fit = LampPromptBuilder("LaMP-3", max_prompt_tokens=120, llm=CharLLM(default="x"), min_item_tokens=4).build("rate", _docs([10, 10]))
    assert len(fit.text) <= 120 and fit.truncated


def test_fit_items_without_budget_keeps_everything():
    items = [Item("a", "long text here", lambda t: f"<{t}>")]
    fit = fit_items(lambda xs, q: " ".join(xs) + q, "?", items, None, TokenCounter())
    assert fit.text == "<long text here>?" and fit.used == ("a",)


def _ranking(query, docs):
    return Ranking(query, [ScoredDoc(d, 1.0 / (1 + i)) for i, d in enumerate(docs)], (StageTrace("retrieve"),))


def test_lamp_generator_outputs_carry_prompt_context_and_usage():
    data = lamp(3)
    llm = ScriptedLLM({"Not buying again": " 1\n", "favourite pedal": "5", "nothing special": "Score: 3"})
    generator = LaMPGenerator(llm, task="lamp_3", batch_size=2)
    rankings = [_ranking(e.query, e.query.user.history[:2]) for e in data]
    outputs = generator.generate(rankings)
    assert [o.text for o in outputs] == ["1", "5", "Score: 3"]
    first = outputs[0]
    assert [d.id for d in first.context] == ["301", "302"]
    assert first.prompt == llm.seen[0][0].content
    assert first.prompt.startswith('"1" is the score for "The tuner stopped working within a week."')
    assert [t.stage for t in first.trace] == ["retrieve", "lamp"]
    assert first.usage.calls == 1 and first.usage.prompt_tokens == len(first.prompt.split())
    assert first.trace[-1].info["raw"] == " 1\n"
    assert llm.calls == 3


def test_lamp_generator_cache_serves_repeats(tmp_path):
    data = lamp(3)
    llm = ScriptedLLM(default="4", cache_dir=str(tmp_path / "cache"))
    generator = LaMPGenerator(llm, task="LaMP-3")
    rankings = [_ranking(e.query, e.query.user.history) for e in data]
    generator.generate(rankings)
    again = generator.generate(rankings)
    assert llm.calls == 3
    assert all(o.trace[-1].info["cached"] and o.usage.cached_calls == 1 for o in again)


def test_lamp_generator_default_new_tokens_per_task():
    assert LaMPGenerator(ScriptedLLM(default="x"), task="LaMP-3").generation_config().max_new_tokens == 8
    assert LaMPGenerator(ScriptedLLM(default="x"), task="LaMP-4").generation_config().max_new_tokens == 48
    assert LaMPGenerator(ScriptedLLM(default="x"), task="LaMP-4", max_new_tokens=5).generation_config().max_new_tokens == 5


def test_lamp_spec_resolves_and_config_round_trips():
    generator = registry.build("lamp:scripted:demo", task="LaMP-5", max_prompt_tokens=256)
    assert isinstance(generator, LaMPGenerator) and generator.task == "LaMP-5"
    config = generator.config()
    assert config == {"spec": "lamp", "params": {"llm": "scripted:demo", "task": "LaMP-5", "max_prompt_tokens": 256}}
    assert registry.build_from_config(config).config() == config
    with pytest.raises(InputError, match="llm must be"):
        LaMPGenerator(llm=3)
    with pytest.raises(KeyError, match="valid tasks"):
        LaMPGenerator(ScriptedLLM(default="x"), task="LaMP-9")


def test_lamp_generator_in_a_pipeline_without_retrieval():
    data = lamp(4)
    llm = ScriptedLLM(default="A Headline")
    outputs = Pipeline([LaMPGenerator(llm, task="LaMP-4")]).run(data.queries)
    assert [o.text for o in outputs] == ["A Headline", "A Headline"]
    assert all(o.context == () for o in outputs)
    assert llm.seen[0][0].content == data.examples[0].query.text + "\nAnswer with the headline only."


def test_rag_generator_numbers_passages_and_fits_budget():
    llm = ScriptedLLM(default="Paris")
    docs = [Document("a", "Paris is the capital of France.", title="France"), Document("b", " ".join(["filler"] * 200))]
    query = Query("q1", "What is the capital of France?", user=User("u"))
    out = RAGGenerator(llm, max_prompt_tokens=80, min_item_tokens=5).generate(_ranking(query, docs))[0]
    assert out.text == "Paris"
    assert "[1] France: Paris is the capital of France." in out.prompt
    assert "[2] filler" in out.prompt and len(out.prompt.split()) <= 80
    assert out.trace[-1].info["truncated"] == ["b"]
    assert isinstance(registry.build("rag:scripted:x"), RAGGenerator)


def test_choose_mode_answers_with_the_most_likely_label():
    data = lamp(3)
    llm = ScriptedLLM(scores={"1": -3.0, "2": -2.5, "3": -0.5, "4": -1.0, "5": -2.0})
    outputs = LaMPGenerator(llm, task="LaMP-3", answer_mode="choose").generate([_ranking(e.query, []) for e in data])
    assert [o.text for o in outputs] == ["3", "3", "3"]
    assert outputs[0].trace[-1].info["logprobs"]["4"] == -1.0
    tied = ScriptedLLM(scores={"[1]": -1.0, "[2]": -1.0})
    assert LaMPGenerator(tied, task="LaMP-1", answer_mode="choose").generate(_ranking(lamp(1).examples[0].query, []))[0].text == "[1]"
    with pytest.raises(InputError, match="label set"):
        LaMPGenerator(llm, task="LaMP-4", answer_mode="choose")
