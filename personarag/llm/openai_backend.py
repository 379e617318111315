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
    Answers that all start with the same text (listwise first-token's "[" before each
    identifier) would all look alike in the first token: with `prefill=True` that shared
    start is sent as the beginning of the assistant's answer (`continue_final_message`, which
    vLLM's server offers; OpenAI's API does not) and the next token's top logprobs are read;
    without it such a call raises InputError naming both ways out.
  * `score_mode="echo"` (legacy /completions with `echo`, e.g. vLLM's server): the chat is
    rendered as plain "role: content" lines ending in "assistant:", the answer appended,
    and the log-probabilities of the answer's tokens (by `text_offset`) summed. Exact for
    multi-token answers, but the chat template is not applied.
- `permute` (constrained listwise answers, `[B] > [A] > ...`), by `permute_with`:
  "logits_processor": one request per window to a vLLM server started with
  `--logits-processors personarag.llm.vllm_permute:PermutationLogitsProcessor` (personarag
  installed beside it), the labels sent as `vllm_xargs`; the answer is checked and an answer
  that is no permutation (a server without the processor) raises LLMRequestError. Otherwise one
  identifier at a time, each request continuing the answer so far (`prefill=True`) and
  restricted to the identifiers not yet written: "structured_outputs" (vLLM 0.11+ servers:
  `structured_outputs={"choice": [...]}`), "guided_choice" (older vLLM servers) or
  "top_logprobs" (any server with logprobs: the most likely unwritten identifier among the
  top `top_logprobs`; when none is listed, the first unwritten one in the order shown).
  n-1 requests per window (the last identifier is forced); a server with prefix caching
  computes the shared prompt once. With neither way set, `permute` raises InputError naming them.
- Retries with exponential backoff (`backoff` * 2**attempt seconds, at most
  `max_backoff`, or the server's Retry-After) on timeouts, connection errors, HTTP 429 and
  5xx; after `max_retries` an LLMRequestError names the URL, the status and the start of
  the body. Other 4xx fail at once.
- A batch runs on a thread pool of `concurrency` requests; when one request fails for
  good, those already finished are still cached (PartialBatchError) and the rest cancelled.
"""

from __future__ import annotations

import contextvars
import dataclasses
import math
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, Callable

from personarag.errors import InputError, PersonaragError, require
from personarag.llm.base import LLM, AnswerScores, Chat, Completion, GenerationConfig, PartialBatchError, apply_stop, chat_payload
from personarag.llm.permutation import partial_text, permutation_text
from personarag.types import Usage

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# personarag.llm.vllm_permute's names, spelled here: that module imports vllm
VLLM_PROCESSOR, VLLM_ARG = "personarag.llm.vllm_permute:PermutationLogitsProcessor", "personarag_permutation"
PERMUTE_WITH = (None, "logits_processor", "structured_outputs", "guided_choice", "top_logprobs")


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
        prefill: bool = False,
        permute_with: str | None = None,
        cache_dir: str | None = "auto",
    ) -> None:
        if not isinstance(model, str) or not model:
            raise InputError(f"model must be the server's model name, got {model!r}")
        if score_mode not in ("top_logprobs", "echo"):
            raise InputError(f"score_mode must be 'top_logprobs' or 'echo', got {score_mode!r}")
        if permute_with not in PERMUTE_WITH:
            raise InputError(f"permute_with must be one of {PERMUTE_WITH}, got {permute_with!r}")
        if concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise InputError(f"need concurrency >= 1, max_retries >= 0, timeout > 0; got {concurrency}, {max_retries}, {timeout}")
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.api_key_env = api_key_env
        self.timeout, self.max_retries = timeout, max_retries
        self.backoff, self.max_backoff = backoff, max_backoff
        self.concurrency = concurrency
        self.score_mode, self.top_logprobs, self.missing_logprob = score_mode, top_logprobs, missing_logprob
        self.prefill, self.permute_with = bool(prefill), permute_with
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
        return {"base_url": self.base_url, "score_mode": self.score_mode, "top_logprobs": self.top_logprobs, "missing": self.missing_logprob,
                **({"prefill": True} if self.prefill else {}), **({"permute_with": self.permute_with} if self.permute_with else {})}

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
        if self.score_mode == "echo":
            return self._run_batch(chats, lambda chat: self._score_echo(chat, answers), "score")
        prefix = shared_start(answers)
        if prefix.strip() and not self.prefill:
            raise InputError(
                f"the answers all start with {prefix!r} ({answers[:3]}...), and score_mode='top_logprobs' reads only the first "
                f"answer token from {self.base_url}, so every answer would look alike; set prefill=True when the server can "
                "continue a partial assistant message (vLLM's server: continue_final_message; OpenAI's API cannot), "
                "or score_mode='echo' (a /completions server with echo)"
            )
        prefix = prefix if prefix.strip() else ""
        return self._run_batch(chats, lambda chat: self._score_top_logprobs(chat, answers, prefix), "score")

    def _score_top_logprobs(self, chat: Chat, answers: list[str], prefix: str = "") -> AnswerScores:
        start = time.perf_counter()
        answer, pairs = self._top_logprobs(chat, prefix)
        values = {a: top_logprob_value(a[len(prefix):], pairs, self.missing_logprob) for a in answers}
        return AnswerScores(values, _usage(answer, 1, start))

    def _top_logprobs(self, chat: Chat, prefill: str, **extra: Any) -> tuple[dict[str, Any], list[tuple[str, float]]]:
        """The server's answer and the top logprobs of the first token after `prefill` (the start of the assistant's answer)."""
        payload = {**self._continuation(chat, prefill), "max_tokens": 1, "temperature": 0.0, "logprobs": True, "top_logprobs": self.top_logprobs, **extra}
        answer = self.post("/chat/completions", payload)
        try:
            listed = answer["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
            return answer, [(str(t["token"]), float(t["logprob"])) for t in listed]
        except (KeyError, IndexError, TypeError, ValueError):
            raise LLMRequestError(
                f"POST {self.base_url}/chat/completions: no top_logprobs in the answer (does the server support logprobs?): {str(answer)[:300]}"
            ) from None

    def _continuation(self, chat: Chat, prefill: str) -> dict[str, Any]:
        """The request fields that make the server continue `prefill` as the assistant's answer."""
        if not prefill:
            return {"model": self.model, "messages": self._messages(chat)}
        messages = [*self._messages(chat), {"role": "assistant", "content": prefill}]
        return {"model": self.model, "messages": messages, "continue_final_message": True, "add_generation_prompt": False}

    # ---- constrained permutations ------------------------------------------------------------
    def _permute(self, chats: list[Chat], labels: list[str], config: GenerationConfig) -> list[Completion]:
        if self.permute_with == "logits_processor":
            return self._run_batch(chats, lambda chat: self._permute_processor(chat, labels), "permute")
        if not (self.prefill and self.permute_with):
            raise InputError(
                f"the openai backend constrains a permutation on a vLLM server ({self.base_url}): permute_with='logits_processor' "
                f"when it was started with --logits-processors {VLLM_PROCESSOR}, or prefill=True and permute_with= one of "
                f"{PERMUTE_WITH[2:]} (one identifier at a time; vLLM's server: 'structured_outputs'); OpenAI's API offers "
                "none of these: use listwise scoring='first-token' there"
            )
        return self._run_batch(chats, lambda chat: self._permute_one(chat, labels), "permute")

    def _permute_processor(self, chat: Chat, labels: list[str]) -> Completion:
        """One request: the server's permutation logits processor writes the whole answer."""
        start = time.perf_counter()
        payload = {**self._continuation(chat, ""), "max_tokens": 8 * len(labels) + 8, "temperature": 0.0, "vllm_xargs": {VLLM_ARG: labels}}
        answer = self.post("/chat/completions", payload)
        text = str(((answer.get("choices") or [{}])[0].get("message") or {}).get("content") or "").strip()
        if not (text.startswith("[") and text.endswith("]") and sorted(text[1:-1].split("] > [")) == sorted(labels)):
            raise LLMRequestError(
                f"POST {self.base_url}/chat/completions answered {text[:200]!r}, not a permutation of {labels}: was the server "
                f"started with --logits-processors {VLLM_PROCESSOR} (and personarag importable there), and is every label one token?"
            )
        return Completion((text,), _usage(answer, 1, start))

    def _permute_one(self, chat: Chat, labels: list[str]) -> Completion:
        start = time.perf_counter()
        chosen: list[str] = []
        answers = []
        while len(chosen) < len(labels) - 1:
            left = [x for x in labels if x not in chosen]
            if self.permute_with == "top_logprobs":
                answer, pairs = self._top_logprobs(chat, partial_text(chosen))
                values = [top_logprob_value(x, pairs, -math.inf) for x in left]
                pick = left[max(range(len(left)), key=lambda j: (values[j], -j))]  # none listed: the first left
            else:
                constraint = {"structured_outputs": {"choice": left}} if self.permute_with == "structured_outputs" else {"guided_choice": left}
                payload = {**self._continuation(chat, partial_text(chosen)), "max_tokens": 8, "temperature": 0.0, **constraint}
                answer = self.post("/chat/completions", payload)
                pick = str(((answer.get("choices") or [{}])[0].get("message") or {}).get("content") or "").strip()
                if pick not in left:
                    raise LLMRequestError(
                        f"POST {self.base_url}/chat/completions answered {pick!r}, not one of {left}: does the server "
                        f"honour {self.permute_with!r} and continue_final_message? ({str(answer)[:200]})"
                    )
            chosen.append(pick)
            answers.append(answer)
        chosen += [x for x in labels if x not in chosen]
        usage = Usage()
        for answer in answers:
            usage += _usage(answer, 1, start)
        return Completion((permutation_text(chosen),), dataclasses.replace(usage, seconds=time.perf_counter() - start))

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


def shared_start(answers: list[str]) -> str:
    """The text every answer starts with, cut back to a word boundary ("[" of "[A", "[B"; "Option "
    of "Option A", "Option B"; nothing for "sci-fi", "social"), leaving each answer a character."""
    if len(answers) < 2:
        return ""
    start = os.path.commonprefix(answers)[: min(len(a) for a in answers) - 1]
    while start and start[-1].isalnum() and any(a[len(start)].isalnum() for a in answers):
        start = start[:-1]
    return start


def _usage(answer: dict[str, Any], calls: int, start: float) -> Usage:
    usage = answer.get("usage") or {}
    return Usage(calls, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0), time.perf_counter() - start)


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
