"""The LLM interface: ScriptedLLM, the request cache, usage accounting and load_llm."""

from __future__ import annotations

import math
import multiprocessing
import os

import pytest

from personarag import InputError, UnknownSpecError, registry
from personarag.llm import GenerationConfig, Message, PartialBatchError, load_llm
from personarag.llm.base import LLM, Completion
from personarag.llm.cache import CACHE_FILE, LLMCache, resolve_cache_dir
from personarag.testing import ScriptedLLM
from personarag.types import Usage


def test_scripted_list_responses_in_order_and_usage():
    llm = ScriptedLLM(["first answer", "second one here"])
    out = llm.generate(["hello there", [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q"}]])
    assert [c.text for c in out] == ["first answer", "second one here"]
    assert out[0].usage.calls == 1 and out[0].usage.prompt_tokens == 2 and out[0].usage.completion_tokens == 2
    assert out[1].usage.prompt_tokens == 3 and out[1].usage.completion_tokens == 3
    assert llm.seen[1] == (Message("system", "be brief"), Message("user", "q"))
    assert llm.usage_total.calls == 2
    with pytest.raises(InputError, match="ran out of responses after 2"):
        llm.generate(["third"])


def test_scripted_dict_function_stop_and_n():
    by_key = ScriptedLLM({"capital": "Paris. Done", "colour": "blue"}, default="unknown")
    out = by_key.generate(["the capital of France", "sky colour?", "other"], GenerationConfig(stop=(".",)))
    assert [c.text for c in out] == ["Paris", "blue", "unknown"]
    echo = ScriptedLLM(lambda chat: chat[-1].content.upper())
    [c] = echo.generate(["abc"], GenerationConfig(n=3))
    assert c.texts == ("ABC", "ABC", "ABC")
    with pytest.raises(InputError, match="no response key"):
        ScriptedLLM({"x": "y"}).generate(["nothing matches"])
    with pytest.raises(InputError, match="a list of prompts, got a single str"):
        by_key.generate("the capital of France")


def test_scripted_scores_table_and_function():
    table = ScriptedLLM(scores={"yes": -0.1, "no": -2.3})
    [s] = table.score(["relevant?"], ["yes", "no", "maybe"])
    assert list(s.logprobs) == ["yes", "no", "maybe"]
    assert s.logprobs["yes"] == -0.1 and s.logprobs["maybe"] == -math.inf
    fn = ScriptedLLM(scores=lambda chat, answer: -float(len(answer)) if "doc" in chat[-1].content else -9.0)
    a, b = fn.score(["a doc", "nothing"], ["1", "22"])
    assert a.logprobs == {"1": -1.0, "22": -2.0} and b.logprobs == {"1": -9.0, "22": -9.0}
    with pytest.raises(InputError, match="distinct"):
        fn.score(["x"], ["1", "1"])
    with pytest.raises(InputError, match="list of strings"):
        fn.score(["x"], "yes")


def test_scripted_truncate_and_count_tokens():
    llm = ScriptedLLM()
    assert llm.count_tokens("a  b\nc") == 3
    assert llm.truncate("one two  three four", 3) == "one two  three"
    assert llm.truncate("one two", 5) == "one two"


def test_generation_config_validation():
    assert GenerationConfig(stop="\n").stop == ("\n",)
    with pytest.raises(InputError):
        GenerationConfig(temperature=-1)
    with pytest.raises(InputError):
        GenerationConfig(n=0)


def test_cache_hit_miss_and_cached_usage(tmp_path):
    llm = ScriptedLLM(lambda chat: f"echo {chat[-1].content}", scores={"yes": -0.5, "no": -1.5}, cache_dir=str(tmp_path))
    first = llm.generate(["a", "b"])
    assert llm.calls == 2 and not first[0].cached
    again = ScriptedLLM(lambda chat: "never", scores={}, cache_dir=str(tmp_path))
    second = again.generate(["a", "b", "c"])
    assert [c.text for c in second] == ["echo a", "echo b", "never"]
    assert again.calls == 1  # only "c" reached the backend
    assert second[0].cached and second[0].usage == Usage(cached_calls=1)
    total = Usage.total(c.usage for c in second)
    assert total.calls == 1 and total.cached_calls == 2
    # other parameters or answers are other requests
    assert again.generate(["a"], GenerationConfig(max_new_tokens=5))[0].text == "never"
    llm.score(["a"], ["yes", "no"])
    [s] = again.score(["a"], ["yes", "no"])
    assert s.cached and s.logprobs == {"yes": -0.5, "no": -1.5}
    [s_other] = again.score(["a"], ["no", "yes"])
    assert not s_other.cached and s_other.logprobs == {"no": -math.inf, "yes": -math.inf}
    # -inf survives the JSON round trip
    [s_inf] = ScriptedLLM(lambda chat: "x", scores={}, cache_dir=str(tmp_path)).score(["a"], ["no", "yes"])
    assert s_inf.cached and s_inf.logprobs["yes"] == -math.inf


def test_greedy_ignores_seed_sampling_is_cached_per_seed(tmp_path):
    counter = iter(range(100))
    llm = ScriptedLLM(lambda chat: f"sample {next(counter)}", cache_dir=str(tmp_path))
    assert llm.generate(["q"], GenerationConfig(seed=1))[0].text == "sample 0"
    assert llm.generate(["q"], GenerationConfig(seed=2))[0].text == "sample 0"  # greedy: seed irrelevant
    hot = dict(temperature=0.7)
    assert llm.generate(["q"], GenerationConfig(seed=1, **hot))[0].text == "sample 1"
    assert llm.generate(["q"], GenerationConfig(seed=2, **hot))[0].text == "sample 2"
    assert llm.generate(["q"], GenerationConfig(seed=1, **hot))[0].text == "sample 1"
    assert llm.calls == 3


def test_duplicate_prompts_in_a_batch_run_once():
    llm = ScriptedLLM(["only one"])
    out = llm.generate(["same", "same"])
    assert [c.text for c in out] == ["only one", "only one"] and llm.calls == 1
    assert out[1].cached and out[0].usage.calls == 1


class FailsAfter(LLM):
    """Finishes the first `ok` prompts of a batch, then fails: the shape of a network error mid-batch."""

    spec_name = "test-fails-after"

    def __init__(self, ok: int, cache_dir: str | None = None) -> None:
        self.ok, self.cache_dir, self.calls = ok, cache_dir, 0

    @property
    def model_name(self) -> str:
        return "fails-after"

    def _generate(self, chats, config):
        done = {}
        for i, chat in enumerate(chats):
            if self.calls >= self.ok:
                raise PartialBatchError(done, ConnectionError(f"failed on {chat[-1].content}"))
            self.calls += 1
            done[i] = Completion((f"done {chat[-1].content}",), Usage(calls=1))
        return [done[i] for i in range(len(chats))]

    def _score(self, chats, answers):
        raise NotImplementedError


def test_finished_results_are_cached_when_a_batch_fails(tmp_path):
    llm = FailsAfter(ok=2, cache_dir=str(tmp_path))
    with pytest.raises(ConnectionError, match="failed on p2"):
        llm.generate(["p0", "p1", "p2"])
    retry = FailsAfter(ok=1, cache_dir=str(tmp_path))
    out = retry.generate(["p0", "p1", "p2"])
    assert [c.text for c in out] == ["done p0", "done p1", "done p2"]
    assert [c.cached for c in out] == [True, True, False] and retry.calls == 1


def _write_entries(directory: str, worker: int, count: int) -> None:
    cache = LLMCache(directory)
    for i in range(count):
        cache.put(f"w{worker}-{i}", {"text": f"value {worker} {i}" * (1 + i % 7)})


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_write_entries, args=(str(tmp_path), w, 300)) for w in range(2)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(60)
        assert p.exitcode == 0
    cache = LLMCache(tmp_path)
    assert len(cache) == 600
    got = cache.get_many([f"w{w}-{i}" for w in range(2) for i in range(300)])
    assert got["w1-299"] == {"text": "value 1 299" * (1 + 299 % 7)} and len(got) == 600


def test_corrupted_and_truncated_cache_file_is_survived(tmp_path, caplog):
    cache = LLMCache(tmp_path)
    cache.put_many({f"k{i}": {"v": i} for i in range(5)})
    path = tmp_path / CACHE_FILE
    lines = path.read_bytes().split(b"\n")
    lines[1] = lines[1][:20] + b"X" + lines[1][21:]  # a flipped byte in the second entry
    damaged = b"\n".join(lines[:5]) + b"\n" + b"GARBAGE\x00\xff\n" + lines[4][: len(lines[4]) // 2]  # a torn last write
    path.write_bytes(damaged)
    reopened = LLMCache(tmp_path)
    assert "skipped 2 damaged line(s)" in caplog.text
    assert reopened.get_many([f"k{i}" for i in range(5)]) == {"k0": {"v": 0}, "k2": {"v": 2}, "k3": {"v": 3}, "k4": {"v": 4}}
    reopened.put("k9", {"v": 9})  # appended after the torn line, not glued to it
    assert LLMCache(tmp_path).get_many(["k9", "k0"]) == {"k9": {"v": 9}, "k0": {"v": 0}}


def test_another_process_entries_become_visible(tmp_path):
    reader = LLMCache(tmp_path)
    assert reader.get("late") is None
    LLMCache(tmp_path).put("late", [1, 2])
    assert reader.get("late") == [1, 2]


def test_cache_dir_auto_reads_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("PERSONARAG_CACHE_DIR", raising=False)
    assert resolve_cache_dir("auto") is None and resolve_cache_dir(None) is None
    monkeypatch.setenv("PERSONARAG_CACHE_DIR", str(tmp_path))
    assert resolve_cache_dir("auto") == tmp_path / "llm"
    assert resolve_cache_dir(str(tmp_path / "x")) == tmp_path / "x"


def test_load_llm_specs_and_config_round_trip():
    llm = load_llm("scripted:mine", default="hi")
    assert isinstance(llm, ScriptedLLM) and llm.model_name == "mine"
    assert llm.config() == {"spec": "scripted", "params": {"default": "hi", "name": "mine"}}
    rebuilt = load_llm(llm.config())
    assert isinstance(rebuilt, ScriptedLLM) and rebuilt.generate(["x"])[0].text == "hi"
    assert load_llm(llm) is llm
    assert registry.build({"spec": "scripted", "params": {"responses": ["a"]}}, role="llm").generate(["q"])[0].text == "a"
    with pytest.raises(UnknownSpecError, match="valid backends: transformers, vllm, openai, scripted"):
        load_llm("llamacpp:model.gguf")
    with pytest.raises(InputError, match="names no model"):
        load_llm("vllm:")


def test_bare_names_and_drive_letters_mean_transformers(monkeypatch):
    seen = {}

    def fake_build(name, role=None, **params):
        seen.update(name=name, **params)
        return ScriptedLLM()

    monkeypatch.setattr(registry, "build", fake_build)
    load_llm("HuggingFaceTB/SmolLM2-135M-Instruct", dtype="float32")
    assert seen == {"name": "transformers", "model": "HuggingFaceTB/SmolLM2-135M-Instruct", "dtype": "float32"}
    load_llm(r"C:\models\tiny")
    assert seen["name"] == "transformers" and seen["model"] == r"C:\models\tiny"
    load_llm("openai:gpt-4o-mini")
    assert seen["name"] == "openai" and seen["model"] == "gpt-4o-mini"


def test_import_llm_stays_light():
    import subprocess
    import sys

    code = "import personarag.llm, personarag.testing, sys; print(sorted(m for m in ('torch', 'transformers', 'vllm', 'requests') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ})
    assert out.stdout.strip() == "[]"
