"""notebooks/personalization.ipynb runs top to bottom in a kernel of this interpreter, with the numbers it should show."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from notebook_kernel import cell_stdout, execute_notebook

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "personalization.ipynb"


def test_personalization_notebook_runs_and_personalizes(tmp_path, monkeypatch):
    check = (
        "import json; print(json.dumps({'results': results, 'answer': output.text, "
        "'context': [d.doc.id for d in output.context], 'similar': similar if encoder else None, "
        "'grown': grown.ids if encoder else None}))"
    )
    nb = execute_notebook(NOTEBOOK, check, tmp_path, monkeypatch)
    found = json.loads(cell_stdout(nb.cells[-1]))
    # a1 (a space movie by ann): BM25 over ann's history finds her astronaut movie m1, tagged sci-fi.
    assert found["answer"] == "sci-fi" and found["context"] == ["m1"]
    # No retrieval: always "comedy", right for a2 and b1 only. Recency: ann's newest item is a comedy
    # (a1 wrong), cleo's is an action film (c1 wrong). BM25: each query's closest own item has its tag.
    assert found["results"]["none"]["accuracy"] == pytest.approx(2 / 5)
    assert found["results"]["recency"]["accuracy"] == pytest.approx(3 / 5)
    assert found["results"]["history:bm25"]["accuracy"] == 1.0
    # macro-F1 over all 15 tags: comedy P=2/5, R=1 -> 4/7 for "none"; three perfect tags -> 3/15 for BM25.
    assert found["results"]["none"]["f1"] == pytest.approx((4 / 7) / 15)
    assert found["results"]["history:bm25"]["f1"] == pytest.approx(3 / 15)
    if found["similar"] is not None:
        assert [user for user, _ in found["similar"]] == ["cleo"]  # the other space-movie fan
        assert "m10" in found["grown"]  # added to the store after fitting, retrieved by the next query
    assert 'prompt : the tag for the movie: "An astronaut explores a wormhole near Saturn." is "sci-fi". Which tag' in cell_stdout(nb.cells[11])


def test_personalization_notebook_is_committed_without_outputs():
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    assert all(not cell.get("outputs") for cell in nb["cells"] if cell["cell_type"] == "code")
