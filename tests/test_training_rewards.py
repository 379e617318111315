"""GRPO rewards: nDCG of the produced permutation (equal to the toolkit's metric), setwise choice, format."""

from __future__ import annotations

import pytest

from personarag.errors import InputError
from personarag.evaluation.metrics import evaluate
from personarag.training.rewards import FormatReward, ListwiseNDCGReward, SetwiseReward, completion_text, ndcg


def test_listwise_reward_equals_the_toolkits_ndcg_of_the_same_order():
    relevance = [0, 2, 0, 1, 0]
    completions = ["<think>passage 2 answers it</think>\n[2] > [4] > [1] > [3] > [5]",
                   "[4] > [2] > [1] > [3] > [5]", "[5] > [3] > [1] > [4] > [2]", "no idea"]
    rewards = ListwiseNDCGReward(k=3)(None, completions, [relevance] * 4)
    qrels = {"q": {f"d{i + 1}": rel for i, rel in enumerate(relevance) if rel}}
    for completion, reward in zip(completions, rewards):
        from personarag.rerankers.parsing import parse_permutation

        order, _ = parse_permutation(completion, 5)
        run = {"q": [(f"d{i + 1}", 5.0 - r) for r, i in enumerate(order)]}
        from personarag.evaluation.runs import Run

        expected = evaluate(Run(run), qrels, ["nDCG@3"]).aggregate["nDCG@3"]
        assert reward == pytest.approx(expected)
    assert rewards[0] == pytest.approx(1.0)
    assert rewards[0] > rewards[1] > rewards[2] and rewards[2] == 0.0
    # an unreadable answer keeps the shown order, as the reranker would
    assert rewards[3] == pytest.approx(ndcg([0, 2, 0], relevance, 3))


def test_conversational_completions_are_read():
    completion = [{"role": "assistant", "content": "[1] > [2]"}]
    assert completion_text(completion) == "[1] > [2]"
    assert ListwiseNDCGReward(10)(None, [completion], [[1, 0]]) == [1.0]


def test_setwise_reward_is_the_chosen_relevance_over_the_best():
    rewards = SetwiseReward()(None, ["B", "<think>A looks right</think>A", "[C]", "none of them"], [[1, 2, 0]] * 4)
    assert rewards == [1.0, 0.5, 0.0, 0.0]
    assert SetwiseReward()(None, ["A"], [[0, 0]]) == [0.0]


def test_format_reward_gives_half_for_reasoning_and_half_for_a_clean_answer():
    rewards = FormatReward("listwise")(None, [
        "<think>because</think>[2] > [1] > [3]",  # both
        "[2] > [1] > [3]",  # no reasoning
        "<think>because</think>[2] > [1]",  # reasoning, incomplete permutation
        "<think>still thinking",  # unclosed
    ], [[0, 1, 0]] * 4)
    assert rewards == [1.0, 0.5, 0.5, 0.0]
    assert FormatReward("listwise", think=False)(None, ["[1] > [2]"], [[1, 0]]) == [1.0]
    assert FormatReward("setwise")(None, ["<think>x</think>B", "B"], [[0, 1]] * 2) == [1.0, 0.5]


def test_rewards_check_their_inputs():
    with pytest.raises(InputError, match="one per completion"):
        ListwiseNDCGReward()(None, ["[1]"], [])
    with pytest.raises(InputError, match="k must be"):
        ListwiseNDCGReward(0)
    with pytest.raises(InputError, match="gains must be >= 0"):
        ndcg([1], [-1], 5)
    assert ndcg([0, 0], [0, 0], 2) == 0.0
