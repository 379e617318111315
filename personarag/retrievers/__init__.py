"""Retrievers: BM25, dense, fusion, user history, collaborative. Backends import their libraries lazily."""

from personarag.retrievers.base import Retriever

__all__ = ["Retriever"]
