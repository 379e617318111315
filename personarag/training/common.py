"""Glue shared by every trainer: configs from YAML, output directories, versions, seeds, checkpoints.

Each training output directory holds `personarag_training.json`: the run's config, the
library versions and (once finished) the data report and metrics. That file marks the
directory as a personarag run, so a second run with a different config is refused unless
`overwrite` (start again) or `resume` (continue from the last checkpoint) is asked for.
The model's own `config.json` (Hugging Face) sits beside it and is left alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from personarag.errors import InputError

logger = logging.getLogger(__name__)

RUN_FILE = "personarag_training.json"
CHECKPOINTS = "checkpoints"
LIBRARIES = ("accelerate", "datasets", "tokenizers")
# Settings that may change between a run and its resumption without making it another run.
RESUME_FREE = frozenset({"resume", "overwrite", "threads", "num_threads"})

C = TypeVar("C")


def library_versions() -> dict[str, str]:
    """Every run's versions plus the training libraries."""
    from personarag.experiment.artifacts import library_versions as run_versions

    return run_versions(LIBRARIES)


def load_config(cls: type[C], path: str | Path | None = None, **overrides: Any) -> C:
    """A config dataclass from a YAML file, with non-None `overrides` (e.g. CLI flags) on top."""
    values: dict[str, Any] = {}
    if path is not None:
        import yaml

        path = Path(path)
        if not path.is_file():
            raise InputError(f"training config {path} does not exist")
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, Mapping):
            raise InputError(f"{path}: expected a mapping of option: value, got {type(loaded).__name__}")
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        where = f"{path}: " if path else ""
        raise InputError(f"{where}unknown training options {unknown}; valid options: {sorted(known)}")
    try:
        return cls(**values)
    except TypeError as error:
        raise InputError(f"training config: {error}") from error


def config_hash(config: Mapping[str, Any]) -> str:
    relevant = {k: v for k, v in config.items() if k not in RESUME_FREE}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def prepare_output_dir(output_dir: str | Path, config: Mapping[str, Any], *, overwrite: bool, resume: bool) -> Path:
    """Create `output_dir` for this run, or refuse to mix it with another one.

    - empty or absent: used;
    - holds a run: `resume` continues it only when its config is the same; `overwrite`
      deletes it first; neither is an error;
    - holds files that are not a personarag run: always an error (never deleted).
    """
    if overwrite and resume:
        raise InputError("give either overwrite (start again) or resume (continue), not both")
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"output directory {out} is a file")
    if out.is_dir() and any(out.iterdir()):
        run_file = out / RUN_FILE
        if not run_file.is_file():
            raise InputError(
                f"output directory {out} is not empty and holds no {RUN_FILE}: it is not a personarag "
                "training run, so it is neither reused nor deleted; choose another directory"
            )
        previous = json.loads(run_file.read_text(encoding="utf-8")).get("config", {})
        if resume:
            if config_hash(previous) != config_hash(config):
                changed = sorted(
                    k for k in set(previous) | set(config)
                    if k not in RESUME_FREE and previous.get(k) != config.get(k)
                )
                raise InputError(f"cannot resume {out}: its run had a different config (changed: {changed})")
        elif overwrite:
            logger.warning("overwriting the previous run in %s", out)
            shutil.rmtree(out)
        else:
            raise InputError(
                f"output directory {out} already holds a training run; pass --resume to continue it "
                "or --overwrite to replace it"
            )
    elif resume:
        logger.warning("resume asked but %s holds no run; starting from scratch", out)
    out.mkdir(parents=True, exist_ok=True)
    write_run_file(out, {"config": dict(config), "versions": library_versions(), "status": "running"})
    return out


def write_run_file(output_dir: str | Path, info: Mapping[str, Any]) -> Path:
    path = Path(output_dir) / RUN_FILE
    previous = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    previous.update(info)
    path.write_text(json.dumps(previous, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return path


def read_run_file(output_dir: str | Path) -> dict[str, Any]:
    path = Path(output_dir) / RUN_FILE
    if not path.is_file():
        raise InputError(f"{output_dir} holds no {RUN_FILE}")
    return json.loads(path.read_text(encoding="utf-8"))


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest `checkpoint-N` under OUT/checkpoints, as the HF Trainer names them."""
    folder = Path(output_dir) / CHECKPOINTS
    if not folder.is_dir():
        return None
    steps = [(int(p.name.split("-")[-1]), p) for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return str(max(steps)[1]) if steps else None


def set_seed(seed: int) -> None:
    from transformers import set_seed as hf_set_seed

    hf_set_seed(seed)


def set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def versions_markdown(versions: Mapping[str, str]) -> str:
    return "\n".join(f"- {name}: {version}" for name, version in versions.items())


def add_config_arguments(parser: Any, cls: type, *, skip: tuple[str, ...] = ()) -> None:
    """One `--flag-name` per field of config dataclass `cls`, typed from its annotation; unset flags stay None."""
    import argparse
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        args = [a for a in typing.get_args(kind) if a is not type(None)] or [kind]
        base = args[0]
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f"(default: {default})" if default is not None else None
        if base is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif base in (int, float, str):
            parser.add_argument(flag, type=base, default=None, help=help_text, metavar=f.name.upper())
        elif typing.get_origin(base) in (list, tuple):
            parser.add_argument(flag, nargs="+", default=None, help=help_text, metavar=f.name.upper())
        else:
            parser.add_argument(flag, default=None, help=help_text)


def config_from_args(cls: type[C], args: Any, *, skip: tuple[str, ...] = ()) -> C:
    """The config of `cls` from `--config FILE` and the flags `add_config_arguments` added."""
    overrides = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(cls) if f.name not in skip}  # type: ignore[arg-type]
    return load_config(cls, getattr(args, "config", None), **overrides)
