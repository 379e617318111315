"""The vLLM engine's logits processor for constrained listwise answers (`VLLMLLM.permute`).

vLLM (v1 engine, 0.11+) takes custom logits processors only when the engine is built
(`LLM(logits_processors=[...])`, or `vllm serve --logits-processors ...`) and passes each
request's own data through `SamplingParams.extra_args`. `VLLMLLM` registers
`PermutationLogitsProcessor` by its qualified name (`PROCESSOR`) on every engine it builds;
a request whose `extra_args` hold `ARG` may then only emit the tokens of `[B] > [A] > ...`
with every label once. `ARG` is either a `PermutationGrammar.as_args()` (token ids: the offline
backend) or the list of label strings, which the processor encodes with the served model's
tokenizer (what a client of `vllm serve --logits-processors personarag.llm.vllm_permute:PermutationLogitsProcessor`
sends as `vllm_xargs`, since it knows no token ids). Requests without `ARG` are left alone,
so the processor costs nothing to the rest.

This module imports vllm at import time: only the engine (and `VLLMLLM`) imports it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

from personarag.errors import InputError
from personarag.llm.permutation import PermutationGrammar, token_grammar

logger = logging.getLogger(__name__)

PROCESSOR = "personarag.llm.vllm_permute:PermutationLogitsProcessor"
ARG = "personarag_permutation"


class PermutationLogitsProcessor(AdapterLogitsProcessor):
    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        super().__init__(vllm_config, device, is_pin_memory)
        self.tokenizer_name = vllm_config.model_config.tokenizer
        self._tokenizer: Any = None
        self._grammars: dict[tuple[str, ...], PermutationGrammar] = {}

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        """Refuse a malformed request at the server's door (HTTP 400), not inside the engine."""
        args = (sampling_params.extra_args or {}).get(ARG)
        if args is None or isinstance(args, dict):
            return
        if not isinstance(args, list) or len(args) < 2 or len(set(map(str, args))) != len(args) or not all(str(x) for x in args):
            raise ValueError(f"{ARG} must be a list of at least two distinct non-empty labels, got {args!r}")

    def is_argmax_invariant(self) -> bool:
        return False  # it changes which token greedy decoding picks

    def grammar(self, labels: list[str]) -> PermutationGrammar:
        """The grammar of label strings, in the served model's tokens (built once per label set)."""
        key = tuple(labels)
        if key not in self._grammars:
            if self._tokenizer is None:
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_name)
            tok = self._tokenizer
            self._grammars[key] = token_grammar(lambda text: list(tok(text, add_special_tokens=False).input_ids), labels, tok.eos_token_id, self.tokenizer_name)
        return self._grammars[key]

    def new_req_logits_processor(self, params: SamplingParams) -> Callable[[list[int], torch.Tensor], torch.Tensor] | None:
        args = (params.extra_args or {}).get(ARG)
        if args is None:
            return None
        try:
            grammar = PermutationGrammar.from_args(args) if isinstance(args, dict) else self.grammar([str(x) for x in args])
        except InputError as error:  # labels of several tokens: left unconstrained; the client sees no permutation and says why
            logger.warning("%s: %s", ARG, error)
            return None

        def constrain(output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
            allowed = torch.tensor(grammar.allowed(output_ids), device=logits.device)
            masked = torch.full_like(logits, float("-inf"))
            masked[allowed] = logits[allowed]
            return masked

        return constrain


def permutation_request(grammar: PermutationGrammar) -> dict[str, Any]:
    """The `SamplingParams` options of one constrained permutation: greedy, exactly the grammar's length."""
    return {"temperature": 0.0, "max_tokens": grammar.length, "extra_args": {ARG: grammar.as_args()}}
