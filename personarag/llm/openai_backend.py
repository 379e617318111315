"""Any OpenAI-compatible HTTP server (OpenAI, vLLM's server, llama.cpp, TGI, Ollama ...).

- Base URL: the `base_url` option, else `$OPENAI_BASE_URL`, else https://api.openai.com/v1.
  The API key is read from the environment variable named by `api_key_env`
  (default OPENAI_API_KEY); without it no Authorization header is sent (local servers).
- `generate`: chat completions with n / temperature / top_p / seed / stop / max_tokens.
  Greedy requests ask for one choice and repeat it n times; a server that returns fewer
  sampled choices than asked is asked again with seed+1, seed+2, ... for the rest.
- `score`, two modes:
  * `score_mode="top_logprobs"` (default; chat servers): one generated token with
    `logprobs=true, top_logprobs=K`. An answer's value is the log of the summed
    probability of the listed first tokens equal to it after stripping spaces ("yes" and
    " yes" both count). LIMITATION: only answers that are a single token and appear among
    the top K get their real value. Others get `missing_logprob` when set, else an upper
    bound on their true value: min(lowest listed log-probability, log of the probability
    mass the list leaves over).
  * `score_mode="echo"` (legacy /completions with `echo`, e.g. vLLM's server): the chat is
    rendered as plain "role: content" lines ending in "assistant:", the answer appended,
    and the log-probabilities of the answer's tokens (by `text_offset`) summed. Exact for
    multi-token answers, but the chat template is not applied.
- Retries with exponential backoff (`backoff` * 2**attempt seconds, at most
  `max_backoff`, or the server's Retry-After) on timeouts, connection errors, HTTP 429 and
  5xx; after `max_retries` an LLMRequestError names the URL, the status and the start of
  the body. Other 4xx fail at once.
- A batch runs on a thread pool of `concurrency` requests; when one request fails for
  good, those already finished are still cached (PartialBatchError) and the rest cancelled.
"""

from __future__ import annotations

import contextvars
import math
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, Callable

from personarag.errors import InputError, PersonaragError, require
from personarag.llm.base import LLM, AnswerScores, Chat, Completion, GenerationConfig, PartialBatchError, apply_stop, chat_payload
from personarag.types import Usage

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class LLMRequestError(PersonaragError):
    """An HTTP request to an LLM server failed for good (after retries where they apply)."""


class OpenAILLM(LLM):
    spec_name = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        concurrency: int = 4,
        score_mode: str = "top_logprobs",
        top_logprobs: int = 20,
        missing_logprob: float | None = None,
        cache_dir: str | None = "auto",
    ) -> None:
        if not isinstance(model, str) or not model:
            raise InputError(f"model must be the server's model name, got {model!r}")
        if score_mode not in ("top_logprobs", "echo"):
            raise InputError(f"score_mode must be 'top_logprobs' or 'echo', got {score_mode!r}")
        if concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise InputError(f"need concurrency >= 1, max_retries >= 0, timeout > 0; got {concurrency}, {max_retries}, {timeout}")
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.api_key_env = api_key_env
        self.timeout, self.max_retries = timeout, max_retries
        self.backoff, self.max_backoff = backoff, max_backoff
        self.concurrency = concurrency
        self.score_mode, self.top_logprobs, self.missing_logprob = score_mode, top_logprobs, missing_logprob
        self.cache_dir = cache_dir
        self._local = threading.local()

    @property
    def model_name(self) -> str:
        return self.model

    def validate(self) -> None:
        super().validate()
        if not self.base_url.startswith(("http://", "https://")):
            raise InputError(f"base_url must start with http:// or https://, got {self.base_url!r}")

    def extra_key(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "score_mode": self.score_mode, "top_logprobs": self.top_logprobs, "missing": self.missing_logprob}

    # ---- HTTP ------------------------------------------------------------------------------
    def _session(self) -> Any:
        if not hasattr(self._local, "session"):
            requests = require("requests", "llm", purpose="the OpenAI-compatible backend")
            self._local.session = requests.Session()
        return self._local.session

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env, "").strip()
        return {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}

    def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST JSON to `base_url + path` with retries; the decoded JSON answer."""
        requests = require("requests", "llm", purpose="the OpenAI-compatible backend")
        url = f"{self.base_url}{path}"
        last = ""
        for attempt in range(self.max_retries + 1):
            wait = min(self.max_backoff, self.backoff * 2**attempt)
            try:
                response = self._session().post(url, json=payload, headers=self._headers(), timeout=self.timeout)
            except (requests.Timeout, requests.ConnectionError) as error:
                last = f"{type(error).__name__} (timeout {self.timeout} s): {str(error)[:200]}"
            else:
                body = response.text[:300]
                if response.status_code == 200:
                    try:
                        return response.json()
                    except ValueError:
                        raise LLMRequestError(f"POST {url}: HTTP 200 but the body is not JSON: {body!r}") from None
                last = f"HTTP {response.status_code}: {body!r}"
                if response.status_code != 429 and response.status_code < 500:
                    raise LLMRequestError(f"POST {url} failed with {last}")
                retry_after = response.headers.get("Retry-After", "")
                if re.fullmatch(r"\d+(\.\d+)?", retry_after.strip()):
                    wait = min(self.max_backoff, float(retry_after))
            if attempt < self.max_retries:
                time.sleep(wait)
        raise LLMRequestError(f"POST {url} failed after {self.max_retries + 1} attempts; last: {last}")

    def _run_batch(self, chats: list[Chat], one: Callable[[Chat], Any], what: str) -> list[Any]:
        tqdm = require("tqdm", "llm").tqdm
        done: dict[int, Any] = {}
        failures: list[tuple[int, BaseException]] = []
        def answer_and_cache(position: int, chat: Chat) -> Any:
            # cached by the worker before it takes the next request, so at most `concurrency`
            # answers are ever uncached: a kill loses only the calls in flight
            result = one(chat)
            self._result_ready(position, result)
            return result

        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(chats))) as pool:
            # each task runs in a copy of this thread's context, where the cache sink is set
            futures = {pool.submit(contextvars.copy_context().run, answer_and_cache, i, chat): i for i, chat in enumerate(chats)}
            for future in tqdm(as_completed(futures), total=len(futures), desc=what, unit="request", disable=None if len(chats) > 1 else True):
                if future.cancelled():
                    continue
                try:
                    done[futures[future]] = future.result()
                except Exception as error:  # noqa: BLE001 (re-raised below, after caching the rest)
                    failures.append((futures[future], error))
                    for other in futures:
                        other.cancel()
        if failures:
            raise PartialBatchError(done, min(failures, key=lambda f: f[0])[1])
        return [done[i] for i in range(len(chats))]

    # ---- generation ------------------------------------------------------------------------
    def _messages(self, chat: Chat) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in chat_payload(chat)]

    def _generate(self, chats: list[Chat], config: GenerationConfig) -> list[Completion]:
        return self._run_batch(chats, lambda chat: self._generate_one(chat, config), "generate")

    def _generate_one(self, chat: Chat, config: GenerationConfig) -> Completion:
        start = time.perf_counter()
        wanted = 1 if config.greedy else config.n
        texts: list[str] = []
        prompt_tokens = completion_tokens = calls = 0
        while len(texts) < wanted:
            payload: dict[str, Any] = {
                "model": self.model,
                "messages": self._messages(chat),
                "max_tokens": config.max_new_tokens,
                "temperature": config.temperature,
                "top_p": config.top_p,
                "n": wanted - len(texts),
                "seed": config.seed + calls,
            }
            if config.stop:
                payload["stop"] = list(config.stop)
            answer = self.post("/chat/completions", payload)
            calls += 1
            choices = answer.get("choices") or []
            if not choices:
                raise LLMRequestError(f"POST {self.base_url}/chat/completions returned no choices: {str(answer)[:300]}")
            texts += [apply_stop((c.get("message") or {}).get("content") or "", config.stop) for c in choices]
            usage = answer.get("usage") or {}
            prompt_tokens += int(usage.get("prompt_tokens") or 0)
            completion_tokens += int(usage.get("completion_tokens") or 0)
        texts = texts[:wanted] * (config.n if config.greedy else 1)
        return Completion(tuple(texts), Usage(calls, prompt_tokens, completion_tokens, time.perf_counter() - start))

    # ---- scoring ---------------------------------------------------------------------------
    def _score(self, chats: list[Chat], answers: list[str]) -> list[AnswerScores]:
        one = self._score_top_logprobs if self.score_mode == "top_logprobs" else self._score_echo
        return self._run_batch(chats, lambda chat: one(chat, answers), "score")

    def _score_top_logprobs(self, chat: Chat, answers: list[str]) -> AnswerScores:
        start = time.perf_counter()
        payload = {
            "model": self.model,
            "messages": self._messages(chat),
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": self.top_logprobs,
        }
        answer = self.post("/chat/completions", payload)
        try:
            listed = answer["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
            pairs = [(str(t["token"]), float(t["logprob"])) for t in listed]
        except (KeyError, IndexError, TypeError, ValueError):
            raise LLMRequestError(
                f"POST {self.base_url}/chat/completions: no top_logprobs in the answer (does the server support logprobs?): {str(answer)[:300]}"
            ) from None
        values = {a: top_logprob_value(a, pairs, self.missing_logprob) for a in answers}
        usage = answer.get("usage") or {}
        return AnswerScores(values, Usage(1, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0), time.perf_counter() - start))

    def _score_echo(self, chat: Chat, answers: list[str]) -> AnswerScores:
        start = time.perf_counter()
        prefix = "".join(f"{role}: {content}\n" for role, content in chat_payload(chat)) + "assistant:"
        values: dict[str, float] = {}
        prompt_tokens = 0
        for a in answers:
            payload = {"model": self.model, "prompt": prefix + a, "max_tokens": 1, "temperature": 0.0, "echo": True, "logprobs": 0}
            answer = self.post("/completions", payload)
            try:
                logprobs = answer["choices"][0]["logprobs"]
                rows = zip(logprobs["tokens"], logprobs["token_logprobs"], logprobs["text_offset"])
            except (KeyError, IndexError, TypeError):
                raise LLMRequestError(f"POST {self.base_url}/completions: no echoed logprobs in the answer: {str(answer)[:300]}") from None
            end = len(prefix) + len(a)
            # tokens overlapping the answer's characters; the one generated token starts at `end`
            values[a] = sum(float(lp) for token, lp, offset in rows if offset + len(token) > len(prefix) and offset < end and lp is not None)
            prompt_tokens += int((answer.get("usage") or {}).get("prompt_tokens") or 0)
        return AnswerScores(values, Usage(len(answers), prompt_tokens, 0, time.perf_counter() - start))


def top_logprob_value(answer: str, listed: list[tuple[str, float]], missing: float | None) -> float:
    """log of the summed probability of listed first tokens equal to `answer` up to spaces (see module doc)."""
    matches = [lp for token, lp in listed if token.strip() == answer.strip()]
    if matches:
        top = max(matches)
        return top + math.log(sum(math.exp(lp - top) for lp in matches))
    if missing is not None:
        return float(missing)
    if not listed:
        return float("-inf")
    leftover = 1.0 - sum(math.exp(lp) for _, lp in listed)
    return min(min(lp for _, lp in listed), math.log(max(leftover, 1e-30)))  # finite even when the list holds ~all mass
