"""The OpenAI-compatible backend against a real HTTP server on 127.0.0.1 (no internet)."""

from __future__ import annotations

import math
import re
import threading
import time
from collections import Counter

import pytest

pytest.importorskip("requests")

from personarag.llm import GenerationConfig, load_llm  # noqa: E402
from personarag.llm.openai_backend import LLMRequestError, OpenAILLM, top_logprob_value  # noqa: E402
from tests.fake_http import JsonPostServer  # noqa: E402

TOP = [("yes", -0.5), (" yes", -2.5), ("no", -1.75), ("Maybe", -4.0)]


class FakeServer:
    """Speaks enough of the chat-completions and completions protocol; behaviour chosen by the last user message."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict, dict]] = []
        self.hits: Counter[str] = Counter()
        self.slow = True
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        self.http = JsonPostServer(self._record_and_respond)
        self.url = self.http.url

    def _record_and_respond(self, path: str, payload: dict, headers: dict) -> tuple[int, object, dict]:
        self.requests.append((path, payload, headers))
        return self.respond(path, payload)

    def respond(self, path, payload):
        if path == "/v1/completions":
            return 200, self.echo(payload), {}
        content = payload["messages"][-1]["content"]
        self.hits[content] += 1
        if content == "FAIL_TWICE" and self.hits[content] <= 2:
            return 500, "upstream exploded", {}
        if content == "RATE_LIMIT" and self.hits[content] == 1:
            return 429, {"error": "slow down"}, {"Retry-After": "0"}
        if content == "BAD_REQUEST":
            return 400, {"error": {"message": "model not found"}}, {}
        if content == "SLOW" and self.slow:
            return 200, {}, {"sleep": 1.0}
        if content.startswith("PARALLEL"):
            with self.lock:
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            time.sleep(0.3)
            with self.lock:
                self.in_flight -= 1
        usage = {"prompt_tokens": len(content.split()), "completion_tokens": 2 * payload.get("n", 1)}
        if payload.get("logprobs"):
            top = [{"token": t, "logprob": lp} for t, lp in TOP]
            choice = {"message": {"content": "yes"}, "logprobs": {"content": [{"token": "yes", "logprob": -0.25, "top_logprobs": top}]}}
            return 200, {"choices": [choice], "usage": usage}, {}
        texts = [f"echo {content} #{payload['seed'] + k}" for k in range(payload["n"] if payload["temperature"] > 0 else 1)]
        return 200, {"choices": [{"message": {"content": t}} for t in texts], "usage": usage}, {}

    @staticmethod
    def echo(payload):
        prompt = payload["prompt"]
        tokens = [(m.group(), m.start()) for m in re.finditer(r"\s*\S+", prompt)] + [(" gen", len(prompt))]
        logprobs = [None] + [-0.5 * len(t.strip()) for t, _ in tokens[1:]]
        return {"choices": [{"text": prompt, "logprobs": {"tokens": [t for t, _ in tokens], "token_logprobs": logprobs, "text_offset": [o for _, o in tokens]}}]}


@pytest.fixture()
def server():
    fake = FakeServer()
    fake.http.start()
    yield fake
    fake.http.close()


def make(server, **options):
    defaults = dict(base_url=server.url, cache_dir=None, backoff=0.01, max_retries=3, timeout=5.0, concurrency=2)
    return OpenAILLM("test-model", **{**defaults, **options})


def test_chat_completions_payload_answers_and_usage(server, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-test")
    llm = make(server, api_key_env="MY_KEY")
    out = llm.generate(["hello world", "second prompt here"], GenerationConfig(max_new_tokens=7, stop=("#",), seed=3))
    assert [c.text for c in out] == ["echo hello world ", "echo second prompt here "]
    assert out[0].usage.calls == 1 and out[0].usage.prompt_tokens == 2 and out[0].usage.completion_tokens == 2
    path, payload, headers = server.requests[0]
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer sk-test"
    assert payload["model"] == "test-model" and payload["max_tokens"] == 7 and payload["stop"] == ["#"]
    assert payload["temperature"] == 0.0 and payload["n"] == 1


def test_sampling_asks_for_n_and_greedy_repeats(server):
    llm = make(server)
    [hot] = llm.generate(["q"], GenerationConfig(temperature=0.8, top_p=0.9, n=3, seed=10))
    assert hot.texts == ("echo q #10", "echo q #11", "echo q #12")
    assert server.requests[-1][1]["n"] == 3 and server.requests[-1][1]["top_p"] == 0.9
    [cold] = llm.generate(["q"], GenerationConfig(n=2))
    assert cold.texts == ("echo q #0", "echo q #0") and server.requests[-1][1]["n"] == 1


def test_score_from_top_logprobs(server):
    llm = make(server)
    [s] = llm.score(["Is it relevant?"], ["yes", "no", "perhaps"])
    assert s.logprobs["yes"] == pytest.approx(math.log(math.exp(-0.5) + math.exp(-2.5)))
    assert s.logprobs["no"] == pytest.approx(-1.75)
    assert s.logprobs["perhaps"] == pytest.approx(-4.0)  # absent: the upper bound, here the lowest listed value
    payload = server.requests[-1][1]
    assert payload["logprobs"] is True and payload["top_logprobs"] == 20 and payload["max_tokens"] == 1
    [floor] = make(server, missing_logprob=-30.0).score(["Is it relevant?"], ["perhaps"])
    assert floor.logprobs["perhaps"] == -30.0


def test_top_logprob_value_bounds_missing_answers_by_the_leftover_mass():
    listed = [("a", math.log(0.5)), ("b", math.log(0.3))]
    assert top_logprob_value("c", listed, None) == pytest.approx(math.log(0.2))
    assert top_logprob_value("c", [("a", math.log(0.9)), ("b", math.log(0.08))], None) == pytest.approx(math.log(0.02))


def test_score_by_echo_sums_the_answer_tokens(server):
    llm = make(server, score_mode="echo")
    [s] = llm.score(["Rate it"], ["4 stars", "5"])
    # the fake server gives each whitespace-led token -0.5 per character: " 4"->-0.5, " stars"->-2.5 ... but
    # "assistant:4" is glued: the straddling token counts, as documented
    prefix = "user: Rate it\nassistant:"
    assert server.requests[-1][1]["prompt"] == prefix + "5" and server.requests[-1][1]["echo"] is True
    assert s.logprobs["4 stars"] == pytest.approx(-0.5 * len("assistant:4") - 0.5 * len("stars"))
    assert s.logprobs["5"] == pytest.approx(-0.5 * len("assistant:5"))


def test_retries_on_500_and_429_then_succeeds(server):
    llm = make(server)
    out = llm.generate(["FAIL_TWICE", "RATE_LIMIT"])
    assert [c.text for c in out] == ["echo FAIL_TWICE #0", "echo RATE_LIMIT #0"]
    assert server.hits["FAIL_TWICE"] == 3 and server.hits["RATE_LIMIT"] == 2


def test_client_errors_fail_at_once_with_url_status_and_body(server):
    llm = make(server)
    with pytest.raises(LLMRequestError) as info:
        llm.generate(["BAD_REQUEST"])
    message = str(info.value)
    assert f"{server.url}/chat/completions" in message and "HTTP 400" in message and "model not found" in message
    assert server.hits["BAD_REQUEST"] == 1


def test_persistent_timeout_names_the_url_and_finished_results_are_cached(server, tmp_path):
    llm = make(server, timeout=0.3, max_retries=1, concurrency=1, cache_dir=str(tmp_path))
    with pytest.raises(LLMRequestError) as info:
        llm.generate(["first", "second", "SLOW"])
    assert f"{server.url}/chat/completions" in str(info.value) and "failed after 2 attempts" in str(info.value)
    assert "timeout 0.3 s" in str(info.value) and server.hits["SLOW"] == 2
    server.slow = False
    retry = make(server, cache_dir=str(tmp_path))
    out = retry.generate(["first", "second", "SLOW"])
    assert [c.text for c in out] == ["echo first #0", "echo second #0", "echo SLOW #0"]
    assert [c.cached for c in out] == [True, True, False]
    assert server.hits["first"] == 1 and server.hits["second"] == 1 and server.hits["SLOW"] == 3


def test_unreachable_server_is_a_clear_error():
    llm = OpenAILLM("m", base_url="http://127.0.0.1:9/v1", cache_dir=None, max_retries=1, backoff=0.01, timeout=1.0)
    with pytest.raises(LLMRequestError, match=r"http://127.0.0.1:9/v1/chat/completions failed after 2 attempts; last: ConnectionError"):
        llm.generate(["x"])


def test_load_llm_openai_reads_base_url_from_the_environment(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1234/v1/")
    llm = load_llm("openai:gpt-4o-mini", cache_dir=None)
    assert isinstance(llm, OpenAILLM) and llm.base_url == "http://127.0.0.1:1234/v1" and llm.model_name == "gpt-4o-mini"
    assert llm.config() == {"spec": "openai", "params": {"model": "gpt-4o-mini", "cache_dir": None}}


def test_a_batch_runs_concurrency_requests_at_once(server):
    out = make(server, concurrency=3).generate([f"PARALLEL {i}" for i in range(7)])
    assert [c.text for c in out] == [f"echo PARALLEL {i} #0" for i in range(7)]
    assert server.max_in_flight == 3
    server.max_in_flight = 0
    make(server, concurrency=1).generate([f"PARALLEL x{i}" for i in range(3)])
    assert server.max_in_flight == 1
