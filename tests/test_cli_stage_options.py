"""Stage options on the `eval` command line: `--llm-option KEY=VALUE` for every LLM the stages build
from a spec (the same nested config a YAML file can give), and `--reranker-depth N` per reranker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import FIXTURES
from personarag import StageTrace, registry
from personarag.cli import main
from personarag.evaluation import Run
from personarag.llm import with_llm_options
from personarag.rerankers.base import Reranker, check_depth

BEIR = FIXTURES / "beir_mini"
LAMP3 = FIXTURES / "lamp" / "LaMP_3"
# retrieval as in tests/test_cli.py: BM25 puts d6, d5, d1 first for q2 "electricity from sunlight"
BEIR_FLAGS = ["--dataset-dir", str(BEIR), "--retriever", "bm25", "--k", "3", "--measures", "MRR@10"]


class DeepReverse(Reranker):
    """Reverses the candidates it is given; carries its own depth like the real rerankers."""

    spec_name = "test-deep-reverse"

    def __init__(self, depth: int | None = None) -> None:
        self.depth = check_depth(depth)

    def _rerank(self, rankings):
        return [r.with_stage(list(reversed(r.docs)), StageTrace("reverse")) for r in rankings]


@pytest.fixture(autouse=True)
def deep_reverse(monkeypatch):
    monkeypatch.setitem(registry.REGISTRY, "test-deep-reverse", registry.Entry("reranker", f"{__name__}:DeepReverse", None, ""))


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def first_stage(out: Path) -> dict[str, list[str]]:
    run = Run.read_trec(out / "run.trec")
    return {q: [d for d, _ in run[q]] for q in ("q1", "q2", "q3")}


def test_with_llm_options_puts_the_options_on_every_llm_built_from_a_spec():
    options = {"threads": 1}
    assert with_llm_options("lamp:transformers:/m", options) == {
        "spec": "lamp", "params": {"llm": {"spec": "transformers", "params": {"model": "/m", "threads": 1}}}}
    assert with_llm_options({"spec": "listwise:/m", "params": {"depth": 20}}, options) == {
        "spec": "listwise", "params": {"depth": 20, "llm": {"spec": "transformers", "params": {"model": "/m", "threads": 1}}}}
    nested = {"spec": "rewrite", "params": {"retriever": "bm25", "llm": {"spec": "openai:gpt", "params": {"threads": 4}}}}
    assert with_llm_options(nested, options)["params"]["llm"] == {"spec": "openai:gpt", "params": {"threads": 1}}
    for stage in ("bm25", "cross-encoder:/m", {"spec": "rrf", "params": {"retrievers": ["bm25", "dense:/m"]}}):
        assert with_llm_options(stage, options) is stage  # builds no LLM: left as it was


def test_llm_options_from_flags_and_config_equal_the_nested_yaml_config(tmp_path):
    cache = tmp_path / "llm-cache"
    base = ["eval", "lamp", "--task", "LaMP-3", "--questions", str(LAMP3 / "dev_questions.json"),
            "--outputs", str(LAMP3 / "dev_outputs.json"), "--retriever", "recency", "--k", "2"]
    nested = tmp_path / "nested.yaml"
    nested.write_text(yaml.safe_dump({"generator": {"spec": "lamp", "params": {
        "llm": {"spec": "scripted", "params": {"default": "4", "cache_dir": str(cache)}}}}}))
    assert main([*base, "--config", str(nested), "--output-dir", str(tmp_path / "nested")]) == 0
    # the same LLM from a plain spec: one option in the config file's llm_options, one as a flag
    flat = tmp_path / "flat.yaml"
    flat.write_text("generator: lamp:scripted\nllm_options: {default: '4'}\n")
    out = tmp_path / "flags"
    assert main([*base, "--config", str(flat), "--llm-option", f"cache_dir={cache}", "--output-dir", str(out)]) == 0
    assert [p["prediction"] for p in lines(out / "predictions.jsonl")] == ["4", "4", "4"]
    config = json.loads((out / "config.json").read_text())
    assert config["generator"]["params"]["llm"] == {"spec": "scripted", "params": {"default": "4", "cache_dir": str(cache)}}
    assert config["generator"] == json.loads((tmp_path / "nested" / "config.json").read_text())["generator"]
    assert json.loads((out / "stats.json").read_text())["usage"]["cached_calls"] == 3  # the nested run filled the cache


def test_llm_option_values_are_yaml_and_errors_name_the_option(tmp_path, capsys):
    out = str(tmp_path / "out")
    args = ["eval", "lamp", "--task", "LaMP-3", "--questions", str(LAMP3 / "dev_questions.json"),
            "--retriever", "none", "--output-dir", out]
    assert main([*args, "--generator", "lamp:transformers:/no/such/model", "--llm-option", "batch_size=8"]) == 2
    err = capsys.readouterr().err
    assert "unknown parameter 'batch_size'" in err and "did you mean 'max_batch_size'" in err
    assert main([*args, "--generator", "lamp:scripted", "--llm-option", "threads"]) == 2
    assert "--llm-option expects KEY=VALUE" in capsys.readouterr().err
    # 'threads=1' is the number 1: the transformers backend takes it; the path is then checked
    assert main([*args, "--generator", "lamp:transformers:/no/such/model", "--llm-option", "threads=1"]) == 2
    assert "/no/such/model does not exist" in capsys.readouterr().err
    assert main(["eval", "beir", *BEIR_FLAGS, "--llm-option", "threads=1", "--output-dir", out]) == 2
    assert "no stage builds an LLM from a spec" in capsys.readouterr().err


def test_each_reranker_gets_its_own_depth_from_the_command_line(tmp_path):
    plain = tmp_path / "plain"
    assert main(["eval", "beir", *BEIR_FLAGS, "--output-dir", str(plain)]) == 0
    retrieved = first_stage(plain)
    out = tmp_path / "out"
    flags = ["--reranker", "test-deep-reverse", "--reranker-depth", "3", "--reranker", "test-deep-reverse",
             "--reranker-depth", "2", "--reranker", "test-deep-reverse", "--rerank-depth", "1"]
    assert main(["eval", "beir", *BEIR_FLAGS, *flags, "--output-dir", str(out)]) == 0
    for query, (a, b, c) in retrieved.items():  # reverse 3, then the top 2 of that, then the top 1
        assert first_stage(out)[query] == [b, c, a]
    pipeline = json.loads((out / "config.json").read_text())["pipeline"]
    assert [s["params"] for s in pipeline["stages"][1:]] == [{"depth": 3}, {"depth": 2}, {}]
    assert pipeline["rerank_depth"] == 1


def test_reranker_depth_and_llm_options_together_on_an_llm_reranker(tmp_path):
    plain = tmp_path / "plain"
    assert main(["eval", "beir", *BEIR_FLAGS, "--output-dir", str(plain)]) == 0
    out = tmp_path / "out"
    flags = ["--reranker", "listwise:scripted", "--reranker-depth", "2", "--llm-option", "default='[2] > [1]'"]
    assert main(["eval", "beir", *BEIR_FLAGS, *flags, "--output-dir", str(out)]) == 0
    for query, (a, b, c) in first_stage(plain).items():
        assert first_stage(out)[query] == [b, a, c]  # the scripted answer swaps the top 2; the third stays
    stage = json.loads((out / "config.json").read_text())["pipeline"]["stages"][1]
    assert stage["spec"] == "listwise" and stage["params"]["depth"] == 2
    assert stage["params"]["llm"] == {"spec": "scripted", "params": {"default": "[2] > [1]"}}
    # the recorded config reruns the same pipeline: every query is already done
    assert main(["eval", "beir", "--config", str(out / "config.json"), "--output-dir", str(out)]) == 0
    assert first_stage(out) == {q: [b, a, c] for q, (a, b, c) in first_stage(plain).items()}


def test_reranker_depth_must_follow_a_reranker(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["eval", "beir", "--reranker-depth", "5", "--reranker", "test-deep-reverse"])
    assert stop.value.code == 2
    assert "must follow the --reranker SPEC" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "lamp", "--reranker", "x", "--reranker-depth", "0"])
    assert "expected a positive integer, got '0'" in capsys.readouterr().err


def test_llm_options_in_a_config_must_be_a_mapping(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("llm_options: threads=1\n")
    assert main(["eval", "beir", "--config", str(config), *BEIR_FLAGS, "--output-dir", str(tmp_path / "o")]) == 2
    assert "llm_options in the config must be a mapping" in capsys.readouterr().err


def test_eval_lamp_takes_the_per_reranker_depth_too(tmp_path):
    config = tmp_path / "lamp.yaml"
    config.write_text(yaml.safe_dump({
        "task": "LaMP-3", "questions": str(LAMP3 / "dev_questions.json"), "retriever": "recency",
        "generator": {"spec": "lamp", "params": {"llm": {"spec": "scripted", "params": {"default": "4"}}}},
        "k": 3, "depth": 3,
    }))
    plain, out = tmp_path / "plain", tmp_path / "out"
    assert main(["eval", "lamp", "--config", str(config), "--output-dir", str(plain)]) == 0
    flags = ["--reranker", "test-deep-reverse", "--reranker-depth", "2"]
    assert main(["eval", "lamp", "--config", str(config), *flags, "--output-dir", str(out)]) == 0
    before = {r["id"]: [d for d, _ in r["retrieved"]] for r in lines(plain / "retrieved.jsonl")}
    after = {r["id"]: [d for d, _ in r["retrieved"]] for r in lines(out / "retrieved.jsonl")}
    assert any(len(docs) == 3 for docs in before.values())
    assert after == {q: docs[:2][::-1] + docs[2:] for q, docs in before.items()}  # only the top 2 reversed
    assert json.loads((out / "config.json").read_text())["rerankers"] == [{"spec": "test-deep-reverse", "params": {"depth": 2}}]


def test_eval_bright_gives_the_llm_options_to_the_query_rewriter(tmp_path):
    out = tmp_path / "out"
    args = ["eval", "bright", "--dataset-dir", str(FIXTURES / "bright_mini"), "--task", "biology", "--retriever", "bm25",
            "--k", "3", "--query-rewriter", "scripted", "--llm-option", "default=moon orientation of moths",
            "--output-dir", str(out)]
    assert main(args) == 0
    rows = lines(out / "biology" / "reasoning.jsonl")
    assert rows and all(r["stage"] == "rewrite" and r["reasoning"] == "moon orientation of moths" for r in rows)
    first = json.loads((out / "config.json").read_text())["pipeline"]["stages"][0]
    assert first["params"]["llm"] == {"spec": "scripted", "params": {"default": "moon orientation of moths"}}
