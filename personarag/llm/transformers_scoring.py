"""Scoring and constrained generation of the transformers backend (`TransformersLLM` mixes this in).

- `_score`: tokens every answer starts with join the prompt; single-token remainders are read
  from one forward pass per prompt (batched, left padding); longer answers continue from the
  prompt's key/value cache (`shared_prefix=True`) or run as (prompt, answer) pairs.
- `_permute`: greedy decoding through `PermutationConstraint`, a logits processor.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

from personarag.errors import require
from personarag.llm.base import AnswerScores, Chat, Completion, GenerationConfig, split_usage
from personarag.llm.permutation import PermutationGrammar, token_grammar
from personarag.types import Usage


class TransformersScoring:
    """Needs from the backend: hf_model, tokenizer, _device, shared_prefix, answer_ids, _fit,
    _padded, _batches, _end_ids, _result_ready, model_name."""

    hf_model: Any
    tokenizer: Any
    _device: Any
    shared_prefix: bool

    def _permute(self, chats: list[Chat], labels: list[str], config: GenerationConfig) -> list[Completion]:
        """Greedy decoding through a logits processor that allows, at each step, only the next
        token of `[L] > [L] > ... [L]` with every label once (see `PermutationConstraint`)."""
        torch = require("torch", "llm")
        transformers = require("transformers", "llm")
        grammar = token_grammar(self.answer_ids, labels, min(self._end_ids()), self.model_name)
        constraint = PermutationConstraint(grammar.labels, grammar.opener, grammar.separator, grammar.closer, grammar.end)
        prompts = [self._fit(chat, constraint.length) for chat in chats]
        order = sorted(range(len(chats)), key=lambda i: -len(prompts[i]))
        results: list[Completion | None] = [None] * len(chats)
        for group in self._batches(order):
            start = time.perf_counter()
            ids, mask, _ = self._padded([prompts[i] for i in group])
            constraint.prompt_width = ids.shape[1]
            settings = transformers.GenerationConfig(
                max_new_tokens=constraint.length, do_sample=False, pad_token_id=self.tokenizer.pad_token_id, eos_token_id=sorted(self._end_ids())
            )
            with torch.inference_mode():
                out = self.hf_model.generate(
                    input_ids=ids, attention_mask=mask, generation_config=settings,
                    logits_processor=transformers.LogitsProcessorList([constraint]),
                )
            rows = out[:, ids.shape[1]:].tolist()
            usages = split_usage(time.perf_counter() - start, [len(prompts[i]) for i in group], [constraint.length] * len(group))
            for k, i in enumerate(group):
                text = self.tokenizer.decode(_until_end(rows[k], self._end_ids()), skip_special_tokens=True)
                results[i] = Completion((text,), usages[k])
                self._result_ready(i, results[i])
        return results  # type: ignore[return-value]

    def _score(self, chats: list[Chat], answers: list[str]) -> list[AnswerScores]:
        answer_ids = [self.answer_ids(a) for a in answers]
        # Tokens every answer starts with (FIRST's "[" before the identifier) join the prompt:
        # then answers that differ in one token are read from one forward pass.
        common = _common_prefix(answer_ids)
        suffixes = [a[len(common):] for a in answer_ids]
        prompts = [self._fit(chat, max(len(a) for a in answer_ids), thinking=False) + common for chat in chats]
        if all(len(s) == 1 for s in suffixes):
            return self._score_last_position(chats, prompts, common, suffixes, answers)
        if self.shared_prefix:
            return self._score_shared(prompts, common, suffixes, answers)
        return self._score_pairs(prompts, common, suffixes, answers)

    def _score_last_position(self, chats: list[Chat], prompts: list[list[int]], common: list[int], suffixes: list[list[int]], answers: list[str]) -> list[AnswerScores]:
        """One forward pass per prompt (batched with left padding): the answers' tokens at the last position."""
        torch = require("torch", "llm")
        tqdm = require("tqdm", "llm").tqdm
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        built: list[AnswerScores | None] = [None] * len(prompts)
        groups = self._batches(order)
        keep = len(common) + 1
        wanted = torch.tensor([s[0] for s in suffixes])
        for group in tqdm(groups, desc="score", unit="batch", disable=None if len(groups) > 1 else True):
            start = time.perf_counter()
            ids, mask, positions = self._padded([prompts[i] for i in group])
            with torch.inference_mode():
                logits = self.hf_model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
            logprobs = logits[:, -keep:, :].float().log_softmax(-1).cpu()
            share = (time.perf_counter() - start) / len(group)
            for k, i in enumerate(group):
                shared = sum(logprobs[k, t, token].item() for t, token in enumerate(common))
                values = (logprobs[k, -1, wanted] + shared).tolist()
                usage = Usage(calls=1, prompt_tokens=len(prompts[i]), seconds=share)
                built[i] = AnswerScores(dict(zip(answers, values)), usage)
                self._result_ready(i, built[i])
        return built  # type: ignore[return-value]

    def _score_shared(self, prompts: list[list[int]], common: list[int], suffixes: list[list[int]], answers: list[str]) -> list[AnswerScores]:
        """Each prompt runs once; every answer continues from its key/value cache (answers batched,
        right-padded: padding after an answer's last token cannot change what came before)."""
        torch = require("torch", "llm")
        tqdm = require("tqdm", "llm").tqdm
        built: list[AnswerScores] = []
        for i, prompt in enumerate(tqdm(prompts, desc="score", unit="prompt", disable=None if len(prompts) > 1 else True)):
            start = time.perf_counter()
            keep = len(common) + 1
            with torch.inference_mode():
                out = self.hf_model(input_ids=torch.tensor([prompt], device=self._device), use_cache=True, logits_to_keep=keep)
                head = out.logits[0, -keep:, :].float().log_softmax(-1)
                shared = sum(head[t, token].item() for t, token in enumerate(common))
                cache, length = getattr(out, "cache", None) or out.past_key_values, len(prompt)
                values: list[float] = []
                rows = 1
                for chunk in self._batches(list(range(len(suffixes)))):
                    if len(chunk) != rows:  # the cache holds one row per answer of the chunk
                        cache.batch_select_indices(torch.zeros(1, dtype=torch.long, device=self._device))
                        if len(chunk) > 1:
                            cache.batch_repeat_interleave(len(chunk))
                        rows = len(chunk)
                    width = max(len(suffixes[j]) for j in chunk) - 1
                    total = [head[-1, suffixes[j][0]].item() + shared for j in chunk]
                    if width > 0:
                        pad = self.tokenizer.pad_token_id
                        tails = [suffixes[j][:-1] + [pad] * (width + 1 - len(suffixes[j])) for j in chunk]
                        ids = torch.tensor(tails, device=self._device)
                        mask = torch.ones(len(chunk), length + width, dtype=torch.long, device=self._device)
                        positions = torch.arange(length, length + width, device=self._device).expand(len(chunk), width)
                        logits = self.hf_model(input_ids=ids, attention_mask=mask, position_ids=positions, **{_cache_argument(self.hf_model): cache}, use_cache=True).logits
                        logprobs = logits.float().log_softmax(-1)
                        for k, j in enumerate(chunk):
                            for t, token in enumerate(suffixes[j][1:]):
                                total[k] += logprobs[k, t, token].item()
                        cache.crop(-width)  # drop the answers again: the next chunk continues from the prompt
                    values.extend(total)
            extra = sum(len(s) - 1 for s in suffixes)
            built.append(AnswerScores(dict(zip(answers, values)), Usage(calls=1, prompt_tokens=len(prompt) + extra, seconds=time.perf_counter() - start)))
            self._result_ready(i, built[-1])
        return built

    def _score_pairs(self, prompts: list[list[int]], common: list[int], suffixes: list[list[int]], answers: list[str]) -> list[AnswerScores]:
        """Without prefix sharing: each (prompt, answer) pair is one padded sequence (the reference path)."""
        torch = require("torch", "llm")
        rows = [(i, j) for i in range(len(prompts)) for j in range(len(answers))]
        sequences = [prompts[i] + suffixes[j] for i, j in rows]
        order = sorted(range(len(rows)), key=lambda r: -len(sequences[r]))
        values: dict[tuple[int, int], float] = {}
        seconds = [0.0] * len(prompts)
        longest = max(len(s) for s in suffixes) + len(common)
        built: dict[int, AnswerScores] = {}
        for group in self._batches(order):
            start = time.perf_counter()
            ids, mask, positions = self._padded([sequences[r] for r in group])
            keep = longest + 1
            with torch.inference_mode():
                logits = self.hf_model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
            logprobs = logits[:, -keep:, :].float().log_softmax(-1)
            for k, r in enumerate(group):
                i, j = rows[r]
                a = common + suffixes[j]
                # logits at position t predict token t+1: the answer's tokens are the last len(a)
                picked = logprobs[k, keep - 1 - len(a) : keep - 1, :].gather(-1, torch.tensor(a, device=logprobs.device)[:, None])
                values[i, j] = picked.sum().item()
            share = (time.perf_counter() - start) / len(group)
            for r in group:
                seconds[rows[r][0]] += share
            for i in sorted({rows[r][0] for r in group}):
                if i not in built and all((i, j) in values for j in range(len(answers))):
                    extra = sum(len(s) for s in suffixes)
                    built[i] = AnswerScores({a: values[i, j] for j, a in enumerate(answers)}, Usage(calls=1, prompt_tokens=len(prompts[i]) + extra, seconds=seconds[i]))
                    self._result_ready(i, built[i])
        return [built[i] for i in range(len(prompts))]


class PermutationConstraint(PermutationGrammar):
    """A transformers logits processor over `PermutationGrammar`: the tokens after `prompt_width`
    must spell the permutation."""

    prompt_width = 0

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        torch = require("torch", "llm")
        mask = torch.full_like(scores, float("-inf"))
        for row, ids in enumerate(input_ids[:, self.prompt_width:].tolist()):
            mask[row, self.allowed(ids)] = 0.0
        return scores + mask


def _cache_argument(model: Any) -> str:
    """The name under which a model's forward takes a key/value cache (`cache` in recent transformers)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _common_prefix(answer_ids: list[list[int]]) -> list[int]:
    """The tokens all answers start with, leaving each answer at least its last token."""
    common: list[int] = []
    for tokens in zip(*answer_ids):
        if len(set(tokens)) != 1 or len(common) + 1 >= min(len(a) for a in answer_ids):
            break
        common.append(tokens[0])
    return common if len(answer_ids) > 1 else []


def _until_end(row: list[int], ends: set[int]) -> list[int]:
    for position, token in enumerate(row):
        if token in ends:
            return row[:position]
    return row
