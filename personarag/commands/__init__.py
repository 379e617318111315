"""Subcommands of the `personarag` CLI, one module each (see personarag/cli.py)."""
