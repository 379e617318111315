"""Run a notebook in a kernel of this interpreter, for the notebook tests (nothing installed globally)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


def execute_notebook(path: Path, extra_code: str, workdir: Path, monkeypatch):
    """Run the notebook plus one appended cell in a python3 kernel of sys.executable (nothing installed globally)."""
    # Connection files and the IPython profile go to the test's folder, not the user's home.
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(workdir / "jupyter-runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(workdir / "ipython"))
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import KernelManager

    class ThisInterpreter(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
            return KernelSpec(argv=argv, display_name=f"Python ({sys.executable})", language="python")

    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(extra_code))
    manager = KernelManager(kernel_name="python3", kernel_spec_manager=ThisInterpreter())
    client = nbclient.NotebookClient(nb, km=manager, timeout=300, resources={"metadata": {"path": str(workdir)}})
    client.execute()
    return nb


def cell_stdout(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream" and o.get("name") == "stdout")
