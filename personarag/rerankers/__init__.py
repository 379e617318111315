"""Rerankers: cross-encoder and LLM pointwise / listwise / setwise / groupwise."""

from personarag.rerankers.base import Reranker

__all__ = ["Reranker"]
