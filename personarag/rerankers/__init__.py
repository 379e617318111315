"""Rerankers: cross-encoder and LLM pointwise / listwise / setwise / groupwise."""

from personarag.rerankers.base import Reranker
from personarag.rerankers.cross_encoder import CrossEncoderReranker
from personarag.rerankers.groupwise import GroupwiseReranker
from personarag.rerankers.listwise import ListwiseReranker
from personarag.rerankers.pointwise import PointwiseReranker
from personarag.rerankers.setwise import SetwiseReranker
from personarag.rerankers.traces import write_reasoning

__all__ = [
    "CrossEncoderReranker",
    "GroupwiseReranker",
    "ListwiseReranker",
    "PointwiseReranker",
    "Reranker",
    "SetwiseReranker",
    "write_reasoning",
]
