"""Runs inside .venv-vllm (see tests/test_llm_vllm.py): our vllm backend on a tiny local Llama,
checked against our transformers backend on the same weights in the same environment.

Usage: python tests/vllm_check.py WORK_DIR TOKENIZER_DIR  -> prints one JSON line of results.
The __main__ guard matters: vLLM spawns its engine process, which re-imports this file.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def build_tiny_llama(path: Path, tokenizer_dir: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    # head size 64 (128 / 2 heads): the vLLM CPU attention kernels refuse small head sizes such as 8
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True, initializer_range=0.5,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def listwise_answers(llm) -> dict:
    """A constrained listwise reranker on vLLM over 14 candidates (windows of 11: letters)."""
    from personarag.rerankers.listwise import ListwiseReranker
    from personarag.types import Document, Query, Ranking, ScoredDoc

    words = "solar wind panels bees honey flowers rivers lakes trains roads stars moons clouds rain".split()
    docs = [ScoredDoc(Document(f"d{i}", f"{w} {words[(i * 5) % len(words)]} facts"), 14.0 - i) for i, w in enumerate(words)]
    given = Ranking(Query("q", "renewable energy from the sun"), tuple(docs))
    [out] = ListwiseReranker(llm, window=11, stride=6, constrained=True, max_doc_tokens=16).rerank([given])
    return {"given": given.ids, "ids": out.ids, "problems": list(out.trace[-1].problems),
            "answers": [a["text"] for a in out.trace[-1].info["answers"]]}


def main(work: Path, tokenizer_dir: Path) -> dict:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from personarag.llm import GenerationConfig, load_llm

    model = build_tiny_llama(work / "tiny-llama", tokenizer_dir)
    prompts = ["Hello", "What is the capital of France?", "a b c d e f", "Tell me a story about a dragon."]
    start = time.perf_counter()
    llm = load_llm(f"vllm:{model}", enforce_eager=True, dtype="float32", max_model_len=512, cache_dir=str(work / "cache"))
    greedy = GenerationConfig(max_new_tokens=8)
    batched = llm.generate(prompts, greedy)
    load_and_first = time.perf_counter() - start
    single = [llm.generate([p], greedy)[0].text for p in prompts[:2]]
    sampled = GenerationConfig(max_new_tokens=8, temperature=1.0, n=2, seed=5)
    samples_a = llm.generate(prompts[:1], sampled)[0].texts
    samples_b = llm.generate(prompts[1:2] + prompts[:1], sampled)[1].texts
    answers_one, answers_multi = ["yes", "no"], ["yes", "no thanks"]
    seconds = {}
    start = time.perf_counter()
    one = [s.logprobs for s in llm.score(prompts, answers_one)]
    seconds["score_single_token_first"] = round(time.perf_counter() - start, 2)
    start = time.perf_counter()
    llm.score([p + " (again)" for p in prompts], answers_one)
    seconds["score_single_token_second"] = round(time.perf_counter() - start, 2)
    start = time.perf_counter()
    multi = [s.logprobs for s in llm.score(prompts, answers_multi)]
    seconds["score_multi_token"] = round(time.perf_counter() - start, 2)
    again = llm.generate(prompts, greedy)  # served by our disk cache
    from personarag.errors import InputError
    from personarag.llm.labels import score_labels

    digits, letters = [str(i) for i in range(1, 10)], [chr(ord("A") + i) for i in range(12)]
    labels = {name: [list(s.logprobs) for s in score_labels(llm, prompts, chosen, prefix="[")] for name, chosen in (("digits", digits), ("letters", letters))}
    permute_labels = {"digits": digits, "letters": letters}
    permuted = {name: [c.text for c in llm.permute(prompts, chosen)] for name, chosen in permute_labels.items()}
    listwise = listwise_answers(llm)
    try:
        load_llm(f"vllm:{model}", permute=False, cache_dir=None).permute(prompts[:1], ["A", "B"])
        permute_error = ""
    except InputError as error:  # raised before any engine starts
        permute_error = str(error)

    reference = load_llm(f"transformers:{model}", threads=1, dtype="float32", cache_dir=None)
    ref_permuted = {name: [c.text for c in reference.permute(prompts, chosen)] for name, chosen in permute_labels.items()}
    ref_labels = {name: [list(s.logprobs) for s in score_labels(reference, prompts, chosen, prefix="[")] for name, chosen in (("digits", digits), ("letters", letters))}
    return {
        "labels": labels,
        "ref_labels": ref_labels,
        "permute_labels": permute_labels,
        "permuted": permuted,
        "ref_permuted": ref_permuted,
        "listwise": listwise,
        "permute_error": permute_error,
        "seconds_to_first_batch": round(load_and_first, 1),
        "seconds": seconds,
        "greedy": [c.text for c in batched],
        "greedy_single": single,
        "greedy_tokens": [c.usage.completion_tokens for c in batched],
        "cached_second_run": [c.cached for c in again],
        "samples_a": list(samples_a),
        "samples_b": list(samples_b),
        "score_one": one,
        "score_multi": multi,
        "ref_greedy": [c.text for c in reference.generate(prompts, greedy)],
        "ref_one": [s.logprobs for s in reference.score(prompts, answers_one)],
        "ref_multi": [s.logprobs for s in reference.score(prompts, answers_multi)],
    }


if __name__ == "__main__":
    result = main(Path(sys.argv[1]), Path(sys.argv[2]))
    print("RESULT " + json.dumps(result))
