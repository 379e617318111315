"""Each LLM answer reaches the cache as it returns, not when its whole batch ends (issue 9, defect 1):
a transformers batch that dies part-way keeps every micro-batch finished before the failure.
(The OpenAI-compatible backend, per request, is covered by tests/test_experiment_kill.py.)"""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from personarag.llm import GenerationConfig  # noqa: E402
from personarag.llm.cache import open_cache  # noqa: E402
from personarag.llm.transformers_backend import TransformersLLM  # noqa: E402
from tests.llm_models import cache_root, smollm2_tokenizer_dir, tiny_llama  # noqa: E402

PROMPTS = ["Is the sky blue?", "Do fish swim?", "Can stones fly?", "Is ice cold?"]


@pytest.fixture(scope="module")
def tiny_dir(request, tmp_path_factory):
    return tiny_llama(tmp_path_factory.mktemp("tiny-llama"), smollm2_tokenizer_dir(cache_root(request, tmp_path_factory)))


class DiesAtCall:
    """Stands in for the HF model: its `at`-th forward or generate call raises, as a kill would stop it."""

    def __init__(self, model, at: int) -> None:
        self.model, self.at, self.calls = model, at, 0

    def _tick(self) -> None:
        self.calls += 1
        if self.calls == self.at:
            raise RuntimeError("killed")

    def __call__(self, *args, **kwargs):
        self._tick()
        return self.model(*args, **kwargs)

    def generate(self, *args, **kwargs):
        self._tick()
        return self.model.generate(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.model, name)


@pytest.mark.parametrize("operation", ["score", "generate"])
def test_a_transformers_batch_that_dies_keeps_its_finished_micro_batches(tiny_dir, tmp_path, operation):
    def run(llm):
        if operation == "score":
            return llm.score(PROMPTS, ["yes", "no"])
        return llm.generate(PROMPTS, GenerationConfig(max_new_tokens=2))

    dying = TransformersLLM(str(tiny_dir), threads=1, cache_dir=str(tmp_path), max_batch_size=1)
    dying._load()
    dying._hf = DiesAtCall(dying._hf, at=3)  # two prompts finish, the third call dies
    with pytest.raises(RuntimeError, match="killed"):
        run(dying)
    assert len(open_cache(tmp_path)) == 2
    again = TransformersLLM(str(tiny_dir), threads=1, cache_dir=str(tmp_path), max_batch_size=1)
    results = run(again)
    assert sum(r.cached for r in results) == 2 and again.usage_total.calls == 2
    clean = run(TransformersLLM(str(tiny_dir), threads=1, cache_dir=None, max_batch_size=1))
    if operation == "score":
        for r, c in zip(results, clean):
            assert dict(r.logprobs) == pytest.approx(dict(c.logprobs), abs=1e-4)
    else:
        assert [r.texts for r in results] == [c.texts for c in clean]
