"""Constrained listwise answers and first-token label scoring through the OpenAI-compatible
backend, against a fake server on a real socket that speaks the parts of vLLM's server these use:
`continue_final_message` (a prefilled answer), `structured_outputs={"choice": ...}` /
`guided_choice` and `logprobs` / `top_logprobs`. Its "model" prefers longer passages and, like a
small model, likes to repeat the identifiers it already wrote."""

from __future__ import annotations

import math
import re

import pytest

pytest.importorskip("requests")

from personarag.errors import InputError  # noqa: E402
from personarag.llm.openai_backend import LLMRequestError, OpenAILLM  # noqa: E402
from personarag.rerankers.listwise import ListwiseReranker  # noqa: E402
from personarag.types import Document, Query, Ranking, ScoredDoc  # noqa: E402
from tests.fake_http import JsonPostServer  # noqa: E402

PASSAGE = re.compile(r"^\[([A-Z0-9]+)\] (.*)$", re.M)


class FakeVLLMServer:
    def __init__(self, *, openai_strict: bool = False, logprobs: bool = True, processor: bool = True) -> None:
        self.openai_strict, self.logprobs, self.processor = openai_strict, logprobs, processor
        self.requests: list[dict] = []
        self.http = JsonPostServer(self._record_and_respond).start()
        self.url = self.http.url

    def _record_and_respond(self, path: str, payload: dict, headers: dict) -> tuple[int, dict, dict]:
        self.requests.append(payload)
        return (*self.respond(payload), {})

    @staticmethod
    def preferences(messages: list[dict]) -> dict[str, float]:
        """The fake model's log-probabilities for the next identifier: longer passages first, an
        identifier already written in the prefilled answer strongly preferred (the repetition a
        constraint must prevent)."""
        prompt = next(m["content"] for m in messages if m["role"] == "user")
        written = messages[-1]["content"] if messages[-1]["role"] == "assistant" else ""
        found = PASSAGE.findall(prompt)
        scores = {label: 0.1 * len(text) + (10.0 if f"[{label}]" in written else 0.0) for label, text in found}
        top = max(scores.values())
        total = math.log(sum(math.exp(v - top) for v in scores.values())) + top
        return {label: v - total for label, v in scores.items()}

    def respond(self, payload: dict) -> tuple[int, dict]:
        vllm_only = {"continue_final_message", "add_generation_prompt", "structured_outputs", "guided_choice"} & set(payload)
        if self.openai_strict and vllm_only:
            return 400, {"error": {"message": f"Unrecognized request argument supplied: {sorted(vllm_only)[0]}"}}
        messages = payload["messages"]
        if messages[-1]["role"] == "assistant" and not (payload.get("continue_final_message") and payload.get("add_generation_prompt") is False):
            return 400, {"error": {"message": "a final assistant message needs continue_final_message and no generation prompt"}}
        values = self.preferences(messages)
        ranked = sorted(values, key=lambda x: -values[x])
        usage = {"prompt_tokens": len(str(messages).split()), "completion_tokens": 1}
        labels = (payload.get("vllm_xargs") or {}).get("personarag_permutation")
        if labels is not None:  # a server with the permutation logits processor writes the model's order
            order = sorted(labels, key=lambda x: -values[x]) if self.processor else [ranked[0]] * len(labels)
            return 200, {"choices": [{"message": {"role": "assistant", "content": " > ".join(f"[{x}]" for x in order)}}], "usage": usage}
        allowed = (payload.get("structured_outputs") or {}).get("choice") or payload.get("guided_choice")
        if allowed:
            pick = max(allowed, key=values.__getitem__)
            return 200, {"choices": [{"message": {"role": "assistant", "content": pick}}], "usage": usage}
        choice: dict = {"message": {"role": "assistant", "content": ranked[0]}}
        if payload.get("logprobs") and self.logprobs:
            top = [{"token": x, "logprob": values[x]} for x in ranked[: payload["top_logprobs"]]]
            choice["logprobs"] = {"content": [{"token": ranked[0], "logprob": values[ranked[0]], "top_logprobs": top}]}
        return 200, {"choices": [choice], "usage": usage}

    def close(self) -> None:
        self.http.close()


@pytest.fixture()
def server():
    fake = FakeVLLMServer()
    yield fake
    fake.close()


def make(url: str, **options) -> OpenAILLM:
    return OpenAILLM("fake", **{"base_url": url, "cache_dir": None, "max_retries": 0, "timeout": 5.0, **options})


def ranking(n: int) -> Ranking:
    # passage i has 3 + (7 * i) % n words: the fake model's preferred order is by that length
    docs = tuple(ScoredDoc(Document(f"d{i}", " ".join(["word"] * (3 + (7 * i) % n))), float(n - i)) for i in range(n))
    return Ranking(Query("q", "which passage is longest"), docs)


def by_length(given: Ranking) -> list[str]:
    return [s.id for s in sorted(given.docs, key=lambda s: -len(s.doc.text))]


def is_permutation(text: str, labels: list[str]) -> bool:
    return text.startswith("[") and text.endswith("]") and sorted(text[1:-1].split("] > [")) == sorted(labels)


@pytest.mark.parametrize("window", [6, 12])
def test_constrained_listwise_through_the_servers_logits_processor_is_one_request(server, window):
    given = ranking(window)
    llm = make(server.url, permute_with="logits_processor")  # no prefill needed
    [out] = ListwiseReranker(llm, window=window, stride=window - 1, constrained=True).rerank([given])
    assert out.ids == by_length(given) and out.trace[-1].problems == ()
    [request] = server.requests
    labels = [str(i + 1) for i in range(window)] if window <= 9 else [chr(65 + i) for i in range(window)]
    assert request["vllm_xargs"] == {"personarag_permutation": labels} and request["messages"][-1]["role"] == "user"


def test_a_server_without_the_logits_processor_is_caught():
    plain = FakeVLLMServer(processor=False)
    try:
        with pytest.raises(LLMRequestError, match=r"not a permutation of \['1', '2', '3'\].*--logits-processors personarag.llm.vllm_permute"):
            make(plain.url, permute_with="logits_processor").permute(["[1] a b\n[2] a\n[3] a b c"], ["1", "2", "3"])
    finally:
        plain.close()


@pytest.mark.parametrize("permute_with", ["structured_outputs", "guided_choice", "top_logprobs"])
@pytest.mark.parametrize("window", [6, 12])
def test_constrained_listwise_over_a_vllm_server_is_the_models_order(server, permute_with, window):
    given = ranking(window)
    llm = make(server.url, prefill=True, permute_with=permute_with)
    [out] = ListwiseReranker(llm, window=window, stride=window - 1, constrained=True).rerank([given])
    assert out.ids == by_length(given) and out.ids != given.ids
    assert out.trace[-1].problems == ()
    [answer] = out.trace[-1].info["answers"]
    labels = [str(i + 1) for i in range(window)] if window <= 9 else [chr(65 + i) for i in range(window)]
    assert is_permutation(answer["text"], labels)
    # one request per identifier but the last, each continuing the answer so far
    assert len(server.requests) == window - 1 and out.trace[-1].usage.calls == window - 1
    last = server.requests[-1]
    assert last["continue_final_message"] is True and last["add_generation_prompt"] is False
    assert last["messages"][-1]["role"] == "assistant" and last["messages"][-1]["content"].endswith("] > [")
    restricted = {"structured_outputs": lambda p: p["structured_outputs"]["choice"], "guided_choice": lambda p: p["guided_choice"]}
    if permute_with in restricted:
        assert [len(restricted[permute_with](p)) for p in server.requests] == list(range(window, 1, -1))


def test_top_logprobs_permutation_stays_valid_when_no_unwritten_identifier_is_listed(server):
    """With top_logprobs=2 the repeated identifiers fill the list after two steps: the rest keep
    the shown order, and the answer is still a full permutation."""
    llm = make(server.url, prefill=True, permute_with="top_logprobs", top_logprobs=2)
    labels = [str(i + 1) for i in range(6)]
    prompt = "I will provide you with 6 passages\n" + "\n".join(f"[{x}] {'w ' * (10 - int(x))}" for x in labels)
    [completion] = llm.permute([prompt], labels)
    assert completion.text == "[1] > [2] > [3] > [4] > [5] > [6]"
    [completion] = llm.permute([prompt.replace("[6] w w w w", "[6] w w w w w w w w w w w w w w")], labels)
    assert completion.text == "[6] > [1] > [2] > [3] > [4] > [5]"  # listed first, then the shown order


def test_first_token_scoring_prefills_the_shared_bracket(server):
    given = ranking(7)
    llm = make(server.url, prefill=True)
    [out] = ListwiseReranker(llm, window=7, stride=6, scoring="first-token").rerank([given])
    assert out.ids == by_length(given)
    [request] = server.requests
    assert request["messages"][-1] == {"role": "assistant", "content": "["} and request["top_logprobs"] == 20
    assert request["max_tokens"] == 1 and request["logprobs"] is True


def test_first_token_without_prefill_says_which_option_to_set(server):
    with pytest.raises(InputError, match=r"prefill=True.*continue_final_message.*score_mode='echo'"):
        ListwiseReranker(make(server.url), window=5, stride=4, scoring="first-token").rerank([ranking(5)])
    assert server.requests == []  # refused before any request


def test_permute_without_the_options_names_them(server):
    with pytest.raises(InputError, match=r"permute_with='logits_processor'.*prefill=True and permute_with=.*structured_outputs.*first-token"):
        make(server.url, prefill=True).permute(["x"], ["A", "B"])
    with pytest.raises(InputError, match="permute_with must be one of"):
        make(server.url, permute_with="regex")


def test_a_server_without_prefill_or_structured_outputs_fails_with_its_own_words():
    strict = FakeVLLMServer(openai_strict=True)
    try:
        with pytest.raises(LLMRequestError, match=r"HTTP 400.*Unrecognized request argument supplied"):
            make(strict.url, prefill=True, permute_with="structured_outputs").permute(["x"], ["A", "B", "C"])
    finally:
        strict.close()


def test_a_server_without_logprobs_says_so():
    bare = FakeVLLMServer(logprobs=False)
    try:
        llm = make(bare.url, prefill=True, permute_with="top_logprobs")
        with pytest.raises(LLMRequestError, match="no top_logprobs in the answer"):
            llm.permute(["[1] a\n[2] b"], ["1", "2"])
        with pytest.raises(LLMRequestError, match="no top_logprobs in the answer"):
            llm.score(["[1] a\n[2] b"], ["[1", "[2"])
    finally:
        bare.close()


def test_a_server_that_ignores_the_choice_is_caught():
    ignoring = FakeVLLMServer()
    ignoring.respond_original = ignoring.respond

    def ignore_constraint(payload):
        payload = {k: v for k, v in payload.items() if k != "structured_outputs"}
        return ignoring.respond_original(payload)  # answers the model's favourite: a repeat

    ignoring.respond = ignore_constraint
    try:
        llm = make(ignoring.url, prefill=True, permute_with="structured_outputs")
        with pytest.raises(LLMRequestError, match=r"answered '1', not one of \['2', '3'\].*honour 'structured_outputs'"):
            llm.permute(["I will\n[1] a b c d\n[2] a\n[3] a b"], ["1", "2", "3"])
    finally:
        ignoring.close()


def test_a_constrained_answer_is_cached_under_its_options(server, tmp_path):
    prompt = "I will\n[1] a b c\n[2] a\n[3] a b c d e"
    first = make(server.url, prefill=True, permute_with="structured_outputs", cache_dir=str(tmp_path))
    [fresh] = first.permute([prompt], ["1", "2", "3"])
    asked = len(server.requests)
    [again] = make(server.url, prefill=True, permute_with="structured_outputs", cache_dir=str(tmp_path)).permute([prompt], ["1", "2", "3"])
    assert again.text == fresh.text == "[3] > [1] > [2]" and again.cached and len(server.requests) == asked == 2
    make(server.url, prefill=True, permute_with="guided_choice", cache_dir=str(tmp_path)).permute([prompt], ["1", "2", "3"])
    assert len(server.requests) == 4  # another way of constraining is another cache entry
