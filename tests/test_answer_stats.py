"""eval/answer_stats.py reads a row's reasoning.jsonl as the rerankers read their answers: scripted
answers with a known share of unreadable, as-shown and first picks come back counted exactly."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import sys
from pathlib import Path

import pytest

from personarag.rerankers.groupwise import GroupwiseReranker
from personarag.rerankers.listwise import ListwiseReranker
from personarag.rerankers.setwise import SetwiseReranker
from personarag.rerankers.traces import write_reasoning
from personarag.testing import ScriptedLLM
from personarag.types import Document, Query, Ranking, ScoredDoc, StageTrace

SCRIPT = Path(__file__).resolve().parents[1] / "eval" / "answer_stats.py"


@pytest.fixture(scope="module")
def answer_stats():
    spec = importlib.util.spec_from_file_location("answer_stats", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module.answer_stats


def ranking(n: int) -> Ranking:
    docs = [ScoredDoc(Document(f"d{i}", f"passage number {i} about genes"), float(n - i)) for i in range(n)]
    return Ranking(Query("q", "genes"), docs, (StageTrace("retrieval"),))


def row_folder(tmp_path: Path, reranker, spec: str, params: dict, n: int) -> tuple[Path, Ranking]:
    out = reranker.rerank(ranking(n))
    folder = tmp_path / spec
    write_reasoning(out, folder / "reasoning.jsonl")
    (folder / "config.json").write_text(json.dumps({"pipeline": {"stages": [{"spec": spec, "params": params}]}}))
    return folder, out[0]


def test_listwise_generation_counts_unreadable_in_order_and_first_picks(tmp_path, answer_stats):
    answers = ["[1] > [2] > [3] > [4]", "[2] > [1] > [4] > [3]", "no idea", "[2] > [1]"]  # windows 5-8, 3-6, 1-4
    params = {"window": 4, "stride": 2}
    folder, out = row_folder(tmp_path, ListwiseReranker(ScriptedLLM(answers[:3]), **params), "listwise", params, 8)
    stats = answer_stats(folder)
    assert (stats.mode, stats.answers, stats.unreadable, stats.as_shown) == ("listwise generate", 3, 1, 1)
    assert stats.picks == {"1": 1, "2": 1}
    windows_with_problems = {p.split(":")[0] for p in out.trace[-1].problems}
    assert len(windows_with_problems) == stats.unreadable


class PermutingLLM(ScriptedLLM):
    """Scripted answers served as constrained (permutation) generations."""

    def _permute(self, chats, labels, config):
        return self._generate(chats, config)


def test_listwise_constrained_letters_are_read_as_positions(tmp_path, answer_stats):
    letters = "ABCDEFGHIJ"
    answers = [" > ".join(f"[{x}]" for x in letters), " > ".join(f"[{x}]" for x in "CAB" + letters[3:])]  # windows 6-15, 1-10
    params = {"window": 10, "stride": 5, "constrained": True}
    folder, out = row_folder(tmp_path, ListwiseReranker(PermutingLLM(answers), **params), "listwise", params, 15)
    stats = answer_stats(folder)
    assert (stats.mode, stats.answers, stats.unreadable, stats.as_shown) == ("listwise constrained", 2, 0, 1)
    assert stats.picks == {"A": 1, "C": 1}
    assert not out.trace[-1].problems


def test_setwise_generation_reads_labels_as_the_reranker_does(tmp_path, answer_stats):
    cycle = itertools.cycle(["A", "The answer is [B]", "I cannot tell"])
    llm = ScriptedLLM(lambda chat: next(cycle))
    params = {"c": 3, "top_k": 2}
    folder, _ = row_folder(tmp_path, SetwiseReranker(llm, **params), "setwise", params, 7)
    stats = answer_stats(folder)
    calls = llm.calls
    assert stats.mode == "setwise generate" and stats.answers == calls > 3
    assert stats.unreadable == calls // 3
    assert stats.as_shown == stats.picks["A"] == (calls + 2) // 3
    assert stats.picks["B"] == (calls + 1) // 3


def test_setwise_likelihood_counts_the_most_probable_label(tmp_path, answer_stats):
    llm = ScriptedLLM(scores={"A": math.log(0.2), "B": math.log(0.7), "C": math.log(0.1)})
    params = {"c": 3, "top_k": 2, "choice": "likelihood"}
    folder, _ = row_folder(tmp_path, SetwiseReranker(llm, **params), "setwise", params, 7)
    stats = answer_stats(folder)
    assert (stats.mode, stats.answers, stats.unreadable, stats.as_shown) == ("setwise likelihood", llm.calls, 0, 0)
    assert stats.picks == {"B": llm.calls}


def test_groupwise_one_score_for_a_whole_group_keeps_the_order_shown(tmp_path, answer_stats):
    answers = ["[1] 5\n[2] 5\n[3] 5\n[4] 5", "[1] 9\n[2] 3\n[3] 3\n[4] 3", "[1] 4\n[2] 4"]
    params = {"group_size": 4}
    llm = ScriptedLLM(answers)
    folder, _ = row_folder(tmp_path, GroupwiseReranker(llm, **params), "groupwise", params, 12)
    stats = answer_stats(folder)
    assert (stats.mode, stats.answers, stats.unreadable, stats.as_shown) == ("groupwise", 3, 1, 1)
    assert stats.picks == {"5": 1, "3": 1}


def test_folder_without_answers_is_skipped(tmp_path, answer_stats):
    assert answer_stats(tmp_path) is None
