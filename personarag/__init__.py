"""personarag: personalized retrieval-augmented generation and LLM reranking.

Only light modules are imported here; retriever, reranker and LLM backends import
their heavy libraries (torch, transformers, faiss, pyserini, vllm) on first use.
"""

from personarag.errors import InputError, MissingExtraError, PersonaragError, UnknownSpecError
from personarag.generators.base import Generator
from personarag.pipeline import Pipeline
from personarag.registry import build
from personarag.rerankers.base import Reranker
from personarag.retrievers.base import Retriever
from personarag.types import Corpus, Document, Output, Query, Ranking, ScoredDoc, StageTrace, Usage, User

__version__ = "0.1.0"

__all__ = [
    "Corpus",
    "Document",
    "Generator",
    "InputError",
    "MissingExtraError",
    "Output",
    "PersonaragError",
    "Pipeline",
    "Query",
    "Ranking",
    "Reranker",
    "Retriever",
    "ScoredDoc",
    "StageTrace",
    "UnknownSpecError",
    "Usage",
    "User",
    "build",
]
