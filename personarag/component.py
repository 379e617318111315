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

    def validate(self) -> None:
        """Cheap checks of what would otherwise fail mid-run, after retrieval: a model path that
        does not exist, an LLM that cannot answer, an unusable cache folder. Raises InputError;
        loads no model weights. The default checks the components this one holds (nested
        retrievers, its LLM); subclasses add their own checks and call `super().validate()`."""
        for child in self.children():
            child.validate()

    def children(self) -> list[Component]:
        """The components this one holds: its attributes (and lists or dicts of them) and its
        `llm`, which stages holding an LLM spec resolve here (building the object, not loading it)."""
        found: list[Component] = []
        values = list(vars(self).values())
        if isinstance(getattr(type(self), "llm", None), property):
            values.append(self.llm)  # type: ignore[attr-defined]
        for value in values:
            if isinstance(value, (Mapping, list, tuple)) and len(value) > 64:
                continue  # data (documents, an index), not a list of stages
            items = value.values() if isinstance(value, Mapping) else value if isinstance(value, (list, tuple)) else [value]
            for item in items:
                if isinstance(item, Component) and item is not self and all(item is not f for f in found):
                    found.append(item)
        return found

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
    describe = getattr(value, "config_value", None)
    if callable(describe):  # an opened resource that a config names by where it is (a user store: its URL)
        return describe()
    raise TypeError(
        f"config value {value!r} of type {type(value).__name__} is not serialisable; "
        "pass plain values (str, numbers, lists, dicts) or components"
    )
