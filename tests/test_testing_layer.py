"""Test doubles live in personarag.testing, and no production module imports them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import personarag
from personarag import registry
from personarag.llm import load_llm
from personarag.testing import ScriptedLLM

PACKAGE = Path(personarag.__file__).parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_production_module_imports_the_test_doubles():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.is_relative_to(PACKAGE / "testing"):
            continue
        bad = sorted(n for n in _imports(path) if n == "personarag.testing" or n.startswith("personarag.testing."))
        if bad:
            offenders.append(f"{path.relative_to(PACKAGE.parent)}: {bad}")
    assert offenders == []
    assert not (PACKAGE / "llm" / "scripted.py").exists() and not (PACKAGE / "llm" / "oracle.py").exists()


def test_a_scripted_spec_still_builds_and_loading_production_code_does_not_import_it():
    llm = load_llm("scripted:judge", default="yes")
    assert isinstance(llm, ScriptedLLM) and llm.generate(["q"])[0].text == "yes"
    assert registry.build("pointwise:scripted:judge").config()["params"]["llm"] == "scripted:judge"
    code = (
        "import sys, personarag, personarag.llm, personarag.pipeline, personarag.rerankers.listwise; "
        "print([m for m in sys.modules if m.startswith('personarag.testing')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
