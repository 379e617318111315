"""Test doubles for tests and benchmarks only: no production module imports this package.

- `ScriptedLLM`: an LLM whose answers come from a script (list, dict or function);
- `OracleLLM`: an LLM that answers reranking prompts from relevance judgements.

A spec can still name the scripted LLM (`scripted`, `pointwise:scripted:NAME`): the
registry holds its dotted path as a string and imports it only when such a spec is built.
"""

from personarag.testing.oracle import OracleLLM
from personarag.testing.scripted import ScriptedLLM, chat_text

__all__ = ["OracleLLM", "ScriptedLLM", "chat_text"]
