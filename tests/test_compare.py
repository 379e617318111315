"""`personarag compare`: paired tests against scipy, Holm, the suite's table, plot and resume."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from conftest import FIXTURES
from personarag.cli import main
from personarag.errors import InputError
from personarag.experiment.measures import Measure, holm, paired_p_value, paired_t_test
from personarag.experiment.report import comparison_table, costs, plot_quality_cost, to_markdown
from personarag.experiment.suite import Suite

HERE = FIXTURES / "candidates"
A = [0.61, 0.42, 0.80, 0.33, 0.57, 0.70, 0.25, 0.91, 0.48, 0.66]
B = [0.55, 0.40, 0.62, 0.35, 0.41, 0.52, 0.20, 0.85, 0.50, 0.47]


def test_paired_t_test_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    assert paired_t_test(A, B) == pytest.approx(stats.ttest_rel(A, B).pvalue, rel=1e-10)
    assert paired_t_test(B, A) == pytest.approx(stats.ttest_rel(A, B).pvalue, rel=1e-10)
    assert paired_t_test([0.1, 0.2], [0.1, 0.2]) == 1.0
    assert paired_t_test([0.5], [0.4]) is None


def test_randomisation_test_matches_scipys_exact_permutation_test():
    stats = pytest.importorskip("scipy.stats")
    exact = stats.permutation_test((A, B), lambda x, y: (x - y).mean(), permutation_type="samples",
                                   n_resamples=float("inf"), alternative="two-sided").pvalue  # all 2^10 sign flips
    assert paired_p_value(A, B, samples=20_000) == pytest.approx(exact, abs=0.01)
    assert exact < 0.05


def test_holm_adjusts_step_down_and_keeps_order():
    # sorted 0.01, 0.03, 0.04: 3*0.01 = 0.03, 2*0.03 = 0.06, max(0.06, 1*0.04) = 0.06
    assert holm([0.04, 0.01, 0.03]) == pytest.approx([0.06, 0.03, 0.06])
    assert holm([0.5, None, 0.4]) == [0.8, None, 0.8]
    assert holm([0.9, 0.8]) == [1.0, 1.0]


def test_costs_average_usage_wall_time_and_trace_problems():
    records = {
        "q1": {"usage": {"calls": 4, "prompt_tokens": 400, "completion_tokens": 8, "seconds": 2.0}, "seconds": 2.5,
               "trace": [{"stage": "listwise", "problems": ["no permutation", "kept input order"]}]},
        "q2": {"usage": {"calls": 2, "prompt_tokens": 200, "completion_tokens": 4, "seconds": 1.0},
               "trace": [{"stage": "listwise", "problems": []}]},
    }
    got = costs(records, ["q1", "q2", "q3"])  # q3 never ran: not averaged in
    assert got["calls"] == 3 and got["prompt_tokens"] == 300 and got["completion_tokens"] == 6
    assert got["seconds"] == pytest.approx(1.75)  # q2 has no wall time: its LLM seconds stand in
    assert got["problems"] == 2 and got["queries_with_problems"] == 1 and got["queries"] == 2


def test_table_marks_significance_after_holm_and_published_rows():
    ids = [f"q{i}" for i in range(10)]
    per_query = {
        "base": {q: {"nDCG@10": b} for q, b in zip(ids, B)},
        "better": {q: {"nDCG@10": a} for q, a in zip(ids, A)},
        "same": {q: {"nDCG@10": b + (0.01 if i % 2 else -0.01)} for i, (q, b) in enumerate(zip(ids, B))},
    }
    metrics = {name: {"nDCG@10": sum(v["nDCG@10"] for v in rows.values()) / 10} for name, rows in per_query.items()}
    table = comparison_table(["base", "better", "same"], metrics, per_query, {}, [Measure("nDCG@10")], baseline="base",
                             tests=["t", "randomisation"], published=[{"name": "paper", "nDCG@10": 0.7, "source": "x"}],
                             query_ids=ids)
    better = table["rows"][1]["tests"]["nDCG@10"]
    stats = pytest.importorskip("scipy.stats")
    raw = [stats.ttest_rel(A, B).pvalue, stats.ttest_rel([per_query["same"][q]["nDCG@10"] for q in ids], B).pvalue]
    assert better["t"]["p"] == pytest.approx(raw[0])
    assert raw[1] == pytest.approx(1.0)  # "same" has a mean difference of 0
    assert better["t"]["p_corrected"] == pytest.approx(2 * raw[0])  # Holm over two systems, the smaller p first
    assert better["t"]["p_corrected"] < 0.05
    assert better["delta"] == pytest.approx(metrics["better"]["nDCG@10"] - metrics["base"]["nDCG@10"])
    assert table["rows"][3] == {"system": "paper", "kind": "published", "metrics": {"nDCG@10": 0.7},
                                "costs": {"calls": None, "prompt_tokens": None, "completion_tokens": None, "seconds": None},
                                "tests": {}, "source": "x"}
    text = to_markdown(table)
    assert "| paper (published, not run) | 0.7000 |" in text
    assert f"{metrics['better']['nDCG@10']:.4f} (+{better['delta']:.4f}*)" in text
    assert "(-0.0000)" in text or "(+0.0000)" in text  # "same" differs by alternating ±0.01: no star
    with pytest.raises(InputError, match="unknown significance tests"):
        comparison_table(["base"], metrics, per_query, {}, [Measure("nDCG@10")], baseline="base", tests=["wilcoxon"])


def _config(tmp_path, **extra):
    config = {
        "name": "mini",
        "dataset": {"candidates": str(HERE / "rank_llm.json"), "qrels": str(HERE / "qrels.txt"), "relevance_level": 2},
        "measures": ["nDCG@10", "MRR@10", "Recall@2"],
        "rerank_depth": 2,
        "baseline": "first",
        "tests": ["t", "randomisation"],
        "systems": [
            {"name": "first"},
            {"name": "oracle", "oracle": True},
            {"name": "scripted", "rerankers": [{"spec": "pointwise", "params": {
                "llm": {"spec": "scripted", "params": {"scores": {"yes": -1.0, "no": -1.0}, "cache_dir": str(tmp_path / "llm")}},
                "case_variants": False}}]},
        ],
        "published": [{"name": "paper", "nDCG@10": 0.9, "MRR@10": 0.95, "prompt_tokens": 1000}],
        "output_dir": str(tmp_path / "out"),
        **extra,
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_compare_runs_every_system_over_the_same_candidates(tmp_path, capsys):
    path = _config(tmp_path)
    assert main(["--no-llm-cache", "compare", str(path)]) == 0
    printed = capsys.readouterr().out
    out = tmp_path / "out"
    table = json.loads((out / "compare.json").read_text())
    rows = {row["system"]: row for row in table["rows"]}
    assert table["measures"] == ["nDCG@10", "MRR(rel=2)@10", "Recall(rel=2)@2"]
    ndcg = (3.5 / (3 + 1 / math.log2(3)) + (3 / math.log2(3) + 1) / (3 + 2 / math.log2(3))) / 3  # see test_candidates
    assert rows["first"]["metrics"]["nDCG@10"] == pytest.approx(ndcg, abs=1e-9)
    assert rows["oracle"]["metrics"]["MRR(rel=2)@10"] == pytest.approx(2 / 3)  # q102's grade-3 passage moves up
    # the scripted judge scores every passage alike: the order stays, 2 calls per query (rerank depth 2)
    assert rows["scripted"]["metrics"] == rows["first"]["metrics"]
    assert rows["scripted"]["costs"]["calls"] == 2 and rows["scripted"]["costs"]["problems"] == 0
    assert rows["scripted"]["costs"]["cached_calls"] == 0  # the warm-up asked about no real query
    assert rows["first"]["costs"]["calls"] == 0
    assert set(rows["oracle"]["tests"]["nDCG@10"]) == {"delta", "t", "randomisation"}
    assert rows["paper"]["kind"] == "published"
    assert rows["paper"]["metrics"]["MRR(rel=2)@10"] == 0.95  # named as the run rows are
    assert "| paper (published, not run) | 0.9000 |" in printed
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "compare.md").read_text() in printed
    for system in ("first", "oracle", "scripted"):
        assert (out / system / "run.trec").is_file() and (out / system / "metrics.json").is_file()


def test_compare_resumes_and_a_new_system_runs_alone(tmp_path):
    path = _config(tmp_path)
    Suite.from_file(path).run(progress=False)
    config = yaml.safe_load(path.read_text())
    config["systems"].append({"name": "oracle-all", "oracle": True, "rerank_depth": 4})
    path.write_text(yaml.safe_dump(config))
    report = Suite.from_file(path).run(progress=False)
    out = tmp_path / "out"
    ran = {s: json.loads((out / s / "stats.json").read_text())["ran"] for s in ("first", "oracle", "scripted", "oracle-all")}
    assert ran == {"first": 0, "oracle": 0, "scripted": 0, "oracle-all": 2}
    assert [row["system"] for row in report.table["rows"]] == ["first", "oracle", "scripted", "oracle-all", "paper"]


def test_compare_over_a_beir_split_shares_one_first_stage(tmp_path):
    config = {
        "dataset": {"beir_dir": str(FIXTURES / "beir_mini"), "first_stage": "bm25"},
        "measures": ["nDCG@10"], "k": 5, "baseline": "bm25",
        "systems": [{"name": "bm25"}, {"name": "oracle", "oracle": True}],
        "output_dir": str(tmp_path / "out"),
    }
    with pytest.raises(InputError, match="the oracle needs dataset.qrels"):
        Suite(config).run(progress=False)
    config["systems"] = [{"name": "bm25"}]
    report = Suite(config).run(progress=False)
    from personarag.evaluation.beir import load_beir
    from personarag.evaluation.metrics import evaluate
    from personarag.pipeline import Pipeline

    beir = load_beir(FIXTURES / "beir_mini")
    direct = evaluate(Pipeline(["bm25"], beir.corpus, k=5).retrieve(beir.queries), beir.qrels, ["nDCG@10"])
    assert report.table["rows"][0]["metrics"]["nDCG@10"] == pytest.approx(direct.aggregate["nDCG@10"])


@pytest.mark.parametrize(
    "change, message",
    [
        ({"color": "red"}, r"unknown keys \['color'\]"),
        ({"baseline": "nope"}, r"baseline 'nope' is not one of the systems"),
        ({"systems": [{"name": "x", "oracle": True, "rerankers": []}]}, "give one of rerankers, pipeline, oracle"),
        ({"systems": [{"name": "x", "retriever": "bm25"}]}, r"unknown keys \['retriever'\]"),
        ({"systems": [{"name": "x", "rerankers": ["bm25"]}], "baseline": "x"}, "the candidates are the first stage"),
        ({"tests": ["wilcoxon"]}, "unknown significance tests"),
    ],
)
def test_bad_suite_configs_are_refused(tmp_path, change, message):
    path = _config(tmp_path, **change)
    with pytest.raises(InputError, match=message):
        Suite.from_file(path).run(progress=False)


def test_plot_names_every_row_once_in_the_legend_with_a_distinct_style(tmp_path, monkeypatch):
    """Seventeen rows at one cost and nearly one quality stay apart: each gets its own legend entry
    (name and nDCG) and its own colour-marker pair; published numbers without a cost are lines."""
    figure_class = pytest.importorskip("matplotlib.figure").Figure
    saved = []
    monkeypatch.setattr(figure_class, "savefig", lambda figure, path, **kw: saved.append(figure))
    rows = [{"system": f"llm-{i}", "kind": "run", "metrics": {"nDCG@10": 0.5 + i / 1000},
             "costs": {"prompt_tokens": 3000.0, "completion_tokens": 10.0}} for i in range(17)]
    rows.append({"system": "bm25", "kind": "run", "metrics": {"nDCG@10": 0.5058}, "costs": {"prompt_tokens": 0.0, "completion_tokens": 0.0}})
    rows.append({"system": "paper", "kind": "published", "metrics": {"nDCG@10": 0.7365}, "costs": {}})
    rows.append({"system": "priced", "kind": "published", "metrics": {"nDCG@10": 0.7}, "costs": {"prompt_tokens": 900}})
    plot_quality_cost({"measures": ["nDCG@10"], "rows": rows}, tmp_path / "plot.png")
    (axes,) = saved[0].axes
    legend = axes.get_legend()
    names = [text.get_text() for text in legend.get_texts()]
    assert sorted(names) == sorted([f"llm-{i} {0.5 + i / 1000:.4f}" for i in range(17)]
                                   + ["bm25 0.5058", "paper (published) 0.7365", "priced (published) 0.7000"])
    styles = [(tuple(c.get_edgecolor()[0]), c.get_paths()[0].vertices.tobytes()) for c in axes.collections]
    assert len(axes.collections) == 19 and len(set(styles)) == 19  # 17 LLM rows, bm25, the priced paper: no two alike
    assert [line.get_ydata()[0] for line in axes.get_lines()] == [0.7365]
