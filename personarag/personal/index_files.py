"""Writing a user index's files so that a kill never leaves a half-written one in place."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def replace_file(path: Path, write: Callable[[Path], object]) -> None:
    """`write` a temporary sibling (same suffix: np.save appends .npy otherwise), then rename it over `path`."""
    tmp = path.with_name(path.name + ".partial" + path.suffix)
    write(tmp)
    os.replace(tmp, path)
