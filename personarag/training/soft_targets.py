"""Soft listwise targets from per-candidate utilities, and the KL loss that trains a cross-encoder on them.

A query's candidates each have a utility for producing the gold output (the LLM's
log-likelihood of the gold with that candidate in the prompt, as `llm_feedback` computes it,
or a label agreement). The target is `softmax(utility / temperature)` over the query's
candidates; the cross-encoder's distribution is the softmax of its logits over the same
candidates; the loss is KL(target || model), averaged over the queries of a batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from personarag.errors import InputError, require


def soft_target(utilities: Sequence[float], temperature: float = 1.0) -> list[float]:
    """softmax(utilities / temperature); -inf utilities get 0 (the LLM gave the gold probability 0 with them)."""
    if temperature <= 0 or not math.isfinite(temperature):
        raise InputError(f"temperature must be a positive number, got {temperature!r}")
    values = [float(u) for u in utilities]
    if len(values) < 2:
        raise InputError(f"a soft target needs at least two candidates, got {len(values)}")
    if any(math.isnan(v) or v == math.inf for v in values):
        raise InputError(f"utilities must be finite numbers or -inf, got {values}")
    finite = [v for v in values if v > -math.inf]
    if not finite:
        raise InputError(f"every utility is -inf ({len(values)} candidates): there is nothing to prefer")
    top = max(finite)
    weights = [math.exp((v - top) / temperature) if v > -math.inf else 0.0 for v in values]
    total = sum(weights)
    return [w / total for w in weights]


def label_utility(task: str, label: str | None, gold: str) -> float:
    """The agreement of a candidate's label with the gold output: LaMP-3 `-|rating - gold|`,
    LaMP-2 1 for the same tag and 0 otherwise; an unlabelled candidate gets the task's worst value."""
    if task == "LaMP-3":
        if label is None:
            return -4.0
        try:
            return -abs(float(label) - float(gold))
        except ValueError as error:
            raise InputError(f"LaMP-3 ratings must be numbers, got candidate {label!r} and gold {gold!r}") from error
    if task == "LaMP-2":
        return 1.0 if label is not None and label.strip().lower() == gold.strip().lower() else 0.0
    raise InputError(f"the label utility is defined for LaMP-2 and LaMP-3 (items with labels), not {task!r}; use the LLM utility")


def kl_loss(model: Any) -> Any:
    """The sentence-transformers loss module: KL(target || softmax(logits)) per query, mean over queries."""
    torch = require("torch", "train", purpose="training the personalized reranker")
    from sentence_transformers.util import batch_to_device

    class SoftTargetKLLoss(torch.nn.Module):
        """Inputs (queries, [docs per query]); labels: one soft target per query (non-negative, summing to 1)."""

        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model
            if getattr(model, "num_labels", 1) != 1:
                raise InputError(f"the KL loss needs a cross-encoder with one output, got {model.num_labels} labels")

        def forward(self, inputs: list[Any], labels: list[Any], **_: Any) -> Any:
            if len(inputs) != 2:
                raise InputError(f"the KL loss expects two input columns (query, docs), got {len(inputs)}")
            queries, docs_list = inputs
            sizes = [len(docs) for docs in docs_list]
            if sizes != [len(t) for t in labels]:
                raise InputError(f"documents per query {sizes} differ from target lengths {[len(t) for t in labels]}")
            pairs = [(q, d) for q, docs in zip(queries, docs_list) for d in docs]
            tokens = batch_to_device(self.model.preprocess(pairs), self.model.device)
            logits = self.model(tokens)["scores"].view(-1).float()
            losses, start = [], 0
            for size, target in zip(sizes, labels):
                target = torch.as_tensor(target, dtype=torch.float32, device=logits.device)
                if (target < 0).any() or abs(float(target.sum()) - 1.0) > 1e-4:
                    raise InputError(f"a soft target must be non-negative and sum to 1, got {target.tolist()}")
                log_p = torch.log_softmax(logits[start : start + size], dim=0)
                losses.append(torch.nn.functional.kl_div(log_p, target, reduction="sum"))
                start += size
            return torch.stack(losses).mean()

        def get_config_dict(self) -> dict[str, Any]:
            return {}

    return SoftTargetKLLoss(model)
