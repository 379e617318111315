"""One LLM interface over transformers, vLLM and OpenAI-compatible servers."""

from personarag.llm.base import LLM, AnswerScores, Completion, GenerationConfig, Message, as_chat

__all__ = ["LLM", "AnswerScores", "Completion", "GenerationConfig", "Message", "as_chat"]
