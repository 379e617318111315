"""The notebooks run top to bottom in a kernel of this interpreter, and are kept without outputs in git."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from notebook_kernel import cell_stdout, execute_notebook
from personarag import registry

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_quickstart_runs_and_scores(tmp_path, monkeypatch):
    if "bm25" not in registry.REGISTRY:
        pytest.skip("the bm25 retriever is not registered yet")
    check = "import json; print(json.dumps({'aggregate': result.aggregate, 'q1': pipe('how do solar panels make electricity').ids}))"
    nb = execute_notebook(NOTEBOOKS / "quickstart.ipynb", check, tmp_path, monkeypatch)
    found = json.loads(cell_stdout(nb.cells[-1]))
    # Each query's words point at its relevant document first, and k=3 holds every relevant one.
    assert found["aggregate"]["MRR@10"] == 1.0
    assert found["aggregate"]["Recall@3"] == 1.0
    assert 0.9 < found["aggregate"]["nDCG@10"] <= 1.0
    assert found["q1"][0] == "solar" and len(found["q1"]) == 3
    table = cell_stdout(nb.cells[5])
    assert "nDCG@10" in table and "(4 judged queries, 0 with no results)" in table


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [] and cell.get("execution_count") is None, f"{path.name} cell {index} has outputs"
