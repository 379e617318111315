"""Serving a personalized pipeline over HTTP: `create_app(pipeline, store, settings)` (FastAPI;
`pip install "personarag[serve]"`), and the batch/format core it shares with `personarag run`."""

from personarag.serve.service import Answer, QueryJob, RerankJob, Service, rerank_result, trec_rag_answer

__all__ = ["Answer", "QueryJob", "RerankJob", "Service", "rerank_result", "trec_rag_answer"]
