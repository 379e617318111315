"""The generator interface: write an output for each query from its ranked context."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from personarag.component import Component
from personarag.errors import InputError
from personarag.types import Output, Ranking


class Generator(Component):
    role: ClassVar[str] = "generator"

    def generate(self, rankings: Sequence[Ranking] | Ranking) -> list[Output]:
        batch = [rankings] if isinstance(rankings, Ranking) else list(rankings)
        for position, ranking in enumerate(batch):
            if not isinstance(ranking, Ranking):
                raise InputError(f"rankings[{position}] is a {type(ranking).__name__}, expected Ranking")
        return self._generate(batch) if batch else []

    @abstractmethod
    def _generate(self, rankings: list[Ranking]) -> list[Output]: ...
