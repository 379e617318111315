"""Generators: task prompts over an LLM backend."""

from personarag.generators.base import Generator

__all__ = ["Generator"]
