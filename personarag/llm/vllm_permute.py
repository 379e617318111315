"""The vLLM engine's logits processor for constrained listwise answers (`VLLMLLM.permute`).

vLLM (v1 engine, 0.11+) takes custom logits processors only when the engine is built
(`LLM(logits_processors=[...])`, or `vllm serve --logits-processors ...`) and passes each
request's own data through `SamplingParams.extra_args`. `VLLMLLM` registers
`PermutationLogitsProcessor` by its qualified name (`PROCESSOR`) on every engine it builds;
a request whose `extra_args` hold `ARG` (a `PermutationGrammar.as_args()`) may then only
emit the tokens of `[B] > [A] > ...` with every label once. Requests without it are left
alone, so the processor costs nothing to the rest.

This module imports vllm at import time: only the engine (and `VLLMLLM`) imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

from personarag.llm.permutation import PermutationGrammar

PROCESSOR = "personarag.llm.vllm_permute:PermutationLogitsProcessor"
ARG = "personarag_permutation"


class PermutationLogitsProcessor(AdapterLogitsProcessor):
    def is_argmax_invariant(self) -> bool:
        return False  # it changes which token greedy decoding picks

    def new_req_logits_processor(self, params: SamplingParams) -> Callable[[list[int], torch.Tensor], torch.Tensor] | None:
        args = (params.extra_args or {}).get(ARG)
        if args is None:
            return None
        grammar = PermutationGrammar.from_args(args)

        def constrain(output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
            allowed = torch.tensor(grammar.allowed(output_ids), device=logits.device)
            masked = torch.full_like(logits, float("-inf"))
            masked[allowed] = logits[allowed]
            return masked

        return constrain


def permutation_request(grammar: PermutationGrammar) -> dict[str, Any]:
    """The `SamplingParams` options of one constrained permutation: greedy, exactly the grammar's length."""
    return {"temperature": 0.0, "max_tokens": grammar.length, "extra_args": {ARG: grammar.as_args()}}
