"""Runs inside .venv-vllm (see tests/test_llm_vllm.py): vLLM's own OpenAI-compatible server on a
tiny local Llama, started with our permutation logits processor, driven by our OpenAI backend's
constrained permutations (that processor; prefill + structured_outputs / top_logprobs) and
prefilled first-token scoring, checked against our
transformers backend on the same weights.

Usage: python tests/vllm_server_check.py WORK_DIR TOKENIZER_DIR  -> prints one JSON line of results.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vllm_check import build_tiny_llama  # noqa: E402

PROMPTS = ["Hello", "What is the capital of France?", "a b c d e f", "Tell me a story about a dragon."]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, server: subprocess.Popen, limit: float) -> float:
    import requests

    start = time.perf_counter()
    while time.perf_counter() - start < limit:
        if server.poll() is not None:
            raise RuntimeError(f"the vLLM server exited with {server.returncode}")
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                return time.perf_counter() - start
        except requests.ConnectionError:
            pass
        time.sleep(1)
    raise RuntimeError(f"the vLLM server was not ready after {limit} s")


def main(work: Path, tokenizer_dir: Path) -> dict:
    from personarag.llm import load_llm
    from personarag.llm.labels import score_labels
    from personarag.llm.openai_backend import VLLM_ARG, VLLM_PROCESSOR, OpenAILLM
    from personarag.llm.vllm_permute import ARG, PROCESSOR

    assert (VLLM_PROCESSOR, VLLM_ARG) == (PROCESSOR, ARG), "openai_backend spells vllm_permute's names differently"

    model = build_tiny_llama(work / "tiny-llama", tokenizer_dir)
    port = free_port()
    log = open(work / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--host", "127.0.0.1",
         "--port", str(port), "--dtype", "float32", "--enforce-eager", "--max-model-len", "512",
         "--logits-processors", VLLM_PROCESSOR],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        ready = wait_ready(url, server, 600)
        digits, letters = [str(i) for i in range(1, 10)], [chr(ord("A") + i) for i in range(12)]
        chosen = {"digits": digits, "letters": letters}
        client = {mode: OpenAILLM(str(model), base_url=url + "/v1", prefill=True, permute_with=mode, cache_dir=None, max_retries=0, timeout=120)
                  for mode in ("logits_processor", "structured_outputs", "top_logprobs")}  # fmt: skip
        permuted, seconds = {}, {}
        for mode, llm in client.items():
            llm.permute(["warm-up " + p for p in PROMPTS], digits)  # first-use costs (tokenizer, grammar compiler) out of the timing
            start = time.perf_counter()
            permuted[mode] = {name: [c.text for c in llm.permute(PROMPTS, labels)] for name, labels in chosen.items()}
            seconds[mode] = round(time.perf_counter() - start, 2)
        served_labels = [list(s.logprobs) for s in score_labels(client["top_logprobs"], PROMPTS, digits, prefix="[")]
        import requests  # a malformed label list is refused at the door (HTTP 400), the engine keeps serving

        bad = requests.post(url + "/v1/chat/completions", json={"model": str(model), "messages": [{"role": "user", "content": "x"}],
                                                                "max_tokens": 4, "vllm_xargs": {VLLM_ARG: ["A"]}}, timeout=60)  # fmt: skip
        bad_request = [bad.status_code, bad.text[:300]]
        after_bad = client["logits_processor"].permute(PROMPTS[:1], digits)[0].text
    finally:
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
    reference = load_llm(f"transformers:{model}", threads=1, dtype="float32", cache_dir=None)
    return {
        "seconds_to_ready": round(ready, 1),
        "permute_seconds": seconds,  # 8 windows (4 prompts x 9 digits / 12 letters) per mode, after a warm-up
        "chosen": chosen,
        "permuted": permuted,
        "ref_permuted": {name: [c.text for c in reference.permute(PROMPTS, labels)] for name, labels in chosen.items()},
        "labels": served_labels,
        "bad_request": bad_request,
        "after_bad": after_bad,
        "ref_labels": [list(s.logprobs) for s in score_labels(reference, PROMPTS, digits, prefix="[")],
    }


if __name__ == "__main__":
    result = main(Path(sys.argv[1]), Path(sys.argv[2]))
    print("RESULT " + json.dumps(result))
