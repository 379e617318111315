"""Configurable components: every stage remembers how it was built, so configs round-trip.

A component's config is `{"spec": NAME, "params": {...}}`: the registry name of its class
and the keyword arguments it was constructed with. Nested components (a fusion of
retrievers, the LLM inside a reranker) serialise to nested configs, and
`registry.build_from_config` rebuilds the whole tree.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, ClassVar


class Component:
    """Base of retrievers, rerankers, generators and LLMs."""

    spec_name: ClassVar[str] = ""
    role: ClassVar[str] = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> Component:
        obj = super().__new__(cls)
        try:
            bound = inspect.signature(cls.__init__).bind(None, *args, **kwargs)
        except TypeError:
            bound = None  # __init__ will raise the real, clearer TypeError
        params: dict[str, Any] = {}
        if bound is not None:
            for name, value in list(bound.arguments.items())[1:]:
                kind = inspect.signature(cls.__init__).parameters[name].kind
                if kind is inspect.Parameter.VAR_KEYWORD:
                    params.update(value)
                else:
                    params[name] = value
        obj._construction_params = params
        return obj

    @property
    def params(self) -> dict[str, Any]:
        return dict(getattr(self, "_construction_params", {}))

    def config(self) -> dict[str, Any]:
        if not self.spec_name:
            raise TypeError(f"{type(self).__name__} has no spec_name, so it cannot be saved in a config")
        return {"spec": self.spec_name, "params": {k: _to_config_value(v) for k, v in self.params.items()}}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


def _to_config_value(value: Any) -> Any:
    if isinstance(value, Component):
        return value.config()
    if isinstance(value, (list, tuple)):
        return [_to_config_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _to_config_value(v) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "__fspath__"):
        return str(value)
    raise TypeError(
        f"config value {value!r} of type {type(value).__name__} is not serialisable; "
        "pass plain values (str, numbers, lists, dicts) or components"
    )
