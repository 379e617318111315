"""`Closeable`: objects that hold a resource (a file, a database engine) and close it at the end of a `with` block."""

from __future__ import annotations

from typing import TypeVar

C = TypeVar("C", bound="Closeable")


class Closeable:
    """`with obj:` returns obj and calls `obj.close()` on the way out, error or not."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: C) -> C:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
