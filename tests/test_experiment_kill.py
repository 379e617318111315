"""SIGKILL an `eval` run talking to a slow OpenAI-compatible server on 127.0.0.1, then rerun it.

For each benchmark kind (BEIR with an LLM reranker, BRIGHT with an LLM query rewriter and
reranker, LaMP with an LLM generator): the rerun repeats no LLM call that had finished
before the kill (at most the `concurrency` calls in flight), and the final outputs are
byte-identical to those of an uninterrupted run. Also: a second identical run into a
folder in use is refused at once (defect 4), rather than generating everything twice.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("requests")

from tests.fake_http import JsonPostServer  # noqa: E402

ROOT = Path(__file__).parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
TIMEOUT = 120  # seconds any one subprocess may take; bounded so a hang fails instead of blocking


class SlowLLMServer:
    """Answers chat/completions deterministically (from a hash of the request) after `delay` seconds.

    Score requests (logprobs=true) get yes/no top_logprobs; generation requests get a digit
    for LaMP-3 rating prompts, else a few words. `received` and `completed` count each
    distinct request (messages + kind) as it arrives and once its answer was sent."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.received: Counter[str] = Counter()
        self.completed: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.http = JsonPostServer(self._count_and_answer, on_answered=self._answered).start()
        self.url = self.http.url

    @staticmethod
    def key(payload: dict) -> str:
        return json.dumps([payload.get("messages"), bool(payload.get("logprobs"))], sort_keys=True)

    def _count_and_answer(self, path: str, payload: dict, headers: dict) -> tuple[int, dict, dict]:
        key = self.key(payload)
        with self.lock:
            self.received[key] += 1
        return 200, self.answer(key, payload), {"sleep": self.delay, "Content-Type": "application/json"}

    def _answered(self, path: str, payload: dict) -> None:
        with self.lock:
            self.completed[self.key(payload)] += 1

    @staticmethod
    def answer(key: str, payload: dict) -> dict:
        h = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
        usage = {"prompt_tokens": 10, "completion_tokens": 1}
        if payload.get("logprobs"):
            p = 0.05 + 0.9 * (h % 1000) / 1000
            listed = [{"token": "yes", "logprob": math.log(p)}, {"token": "no", "logprob": math.log(1 - p)}]
            return {"choices": [{"message": {"content": "yes"}, "logprobs": {"content": [
                {"token": "yes", "logprob": math.log(p), "top_logprobs": listed}]}}], "usage": usage}
        text = payload["messages"][-1]["content"]
        content = str(1 + h % 5) if "1 to 5" in text else ["light moon lamps", "colour leaves", "water roots"][h % 3]
        return {"choices": [{"message": {"content": content}}], "usage": usage}

    def total_completed(self) -> int:
        with self.lock:
            return sum(self.completed.values())

    def repeated(self) -> list[str]:
        with self.lock:
            return [k for k, n in self.received.items() if n > 1]

    def close(self) -> None:
        self.http.close()


@pytest.fixture()
def server():
    s = SlowLLMServer(delay=0.15)
    yield s
    s.close()


def llm(concurrency: int) -> dict:
    return {"spec": "openai", "params": {"model": "fake-llm", "concurrency": concurrency, "max_retries": 0}}


def start(server: SlowLLMServer, cache: Path, *argv: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env.update(PYTHONPATH=str(ROOT), OPENAI_BASE_URL=server.url, PERSONARAG_CACHE_DIR=str(cache),
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.Popen([sys.executable, "-m", "personarag.cli", *argv], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> str:
    out, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, err[-3000:]
    return out


def kill_when(process: subprocess.Popen, ready) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not ready():
        if process.poll() is not None:
            pytest.fail(f"the run ended (code {process.returncode}) before it could be killed: {process.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the run never reached the kill point")
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=TIMEOUT)
    assert process.returncode == -signal.SIGKILL


def lines(path: Path) -> int:
    return len(path.read_bytes().splitlines()) if path.exists() else 0


def killed_then_resumed_vs_uninterrupted(server, tmp_path, command, kill_point, files, concurrency):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    argv = ["eval", command, "--config", str(tmp_path / "run.json"), "--output-dir"]
    first = start(server, tmp_path / "cache-a", *argv, str(killed))
    kill_when(first, lambda: kill_point(server, killed))
    finished_before_kill = server.total_completed()
    finish(start(server, tmp_path / "cache-a", *argv, str(killed)))
    repeated = server.repeated()
    # a finished call is never paid twice; only those in flight at the kill may be
    assert len(repeated) <= concurrency, f"{len(repeated)} calls repeated after {finished_before_kill} had finished"
    calls = sum(server.received.values())
    finish(start(server, tmp_path / "cache-b", *argv, str(clean)))
    assert sum(server.received.values()) - calls == len(server.received)  # the clean run made each call once
    for name in files:
        assert (killed / name).read_bytes() == (clean / name).read_bytes(), name
    return killed, finished_before_kill


def test_beir_with_an_llm_reranker_killed_mid_batch(server, tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({
        "dataset_dir": str(FIXTURES / "beir_mini"), "retriever": "bm25", "k": 6,
        "rerankers": [{"spec": "pointwise", "params": {"llm": llm(2)}}],
        "measures": ["nDCG@10", "MRR@10"], "batch_size": 64,  # every query in one reranker batch
    }))
    out, finished = killed_then_resumed_vs_uninterrupted(
        server, tmp_path, "beir", lambda s, _: s.total_completed() >= 8,
        ["run.trec", "metrics.json", "per_query.json"], concurrency=2)
    assert finished >= 8 and len(server.received) == 18  # 3 queries x 6 documents, each asked once


def test_bright_with_llm_rewriter_and_reranker_killed(server, tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({
        "dataset_dir": str(FIXTURES / "bright_mini"), "tasks": ["biology"], "retriever": "bm25", "k": 4,
        "query_rewriter": llm(1), "rerankers": [{"spec": "pointwise", "params": {"llm": llm(2)}}],
        "batch_size": 2,
    }))
    out, _ = killed_then_resumed_vs_uninterrupted(
        server, tmp_path, "bright", lambda s, out: lines(out / "biology" / "rankings.jsonl") >= 2,
        ["metrics.json", "biology/run.trec", "biology/metrics.json", "biology/per_query.json", "biology/reasoning.jsonl"],
        concurrency=2)
    stats = json.loads((out / "biology" / "stats.json").read_text())
    assert stats["resumed"] >= 2 and stats["ran"] <= 4  # the rerun redid only the unfinished queries
    assert len(server.received) == 6 + 6 * 4  # one rewrite and four judgements per query


def lamp_config(tmp_path: Path, concurrency: int = 1) -> None:
    lamp3 = FIXTURES / "lamp" / "LaMP_3"
    (tmp_path / "run.json").write_text(json.dumps({
        "task": "LaMP-3", "questions": str(lamp3 / "dev_questions.json"), "outputs": str(lamp3 / "dev_outputs.json"),
        "retriever": "recency", "k": 2, "batch_size": 1,
        "generator": {"spec": "lamp", "params": {"llm": llm(concurrency)}},
    }))


def test_lamp_with_an_llm_generator_killed(server, tmp_path):
    server.delay = 0.4  # three examples only: leave time to kill between them
    lamp_config(tmp_path)
    out, _ = killed_then_resumed_vs_uninterrupted(
        server, tmp_path, "lamp", lambda s, out: lines(out / "predictions.jsonl") >= 1,
        ["predictions.jsonl", "metrics.json"], concurrency=1)
    assert json.loads((out / "stats.json").read_text())["generated"] <= 2
    assert [json.loads(line)["id"] for line in (out / "predictions.jsonl").read_text().splitlines()] == ["3-1", "3-2", "3-3"]


def test_a_second_identical_lamp_run_into_a_busy_folder_is_refused_at_once(server, tmp_path):
    """Defect 4: two identical runs into one folder both generated everything and wrote every example twice."""
    server.delay = 2.5  # the first run is still going when the second has started and been refused
    lamp_config(tmp_path)
    out = tmp_path / "out"
    argv = ["eval", "lamp", "--config", str(tmp_path / "run.json"), "--output-dir", str(out)]
    first = start(server, tmp_path / "cache", *argv)
    deadline = time.monotonic() + TIMEOUT
    while server.total_completed() < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    second = start(server, tmp_path / "cache", *argv)
    _, err = second.communicate(timeout=TIMEOUT)
    assert first.poll() is None  # refused while the first was running, not after it
    assert second.returncode == 2 and f"is in use by a run of process {first.pid}" in err
    finish(first)
    ids = [json.loads(line)["id"] for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert ids == ["3-1", "3-2", "3-3"]
    assert sum(server.received.values()) == 3
