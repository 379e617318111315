"""What every run-producing command shares: config files, run names, output folders, versions."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from personarag.errors import InputError
from personarag.pipeline import Pipeline, load_config

T = TypeVar("T")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON file describing the run; flags override it")
    parser.add_argument("--output-dir", metavar="OUT", help="folder for run.trec, metrics.json and config.json")
    parser.add_argument("--overwrite", action="store_true", help="replace the results of a different run in OUT")
    add_engine_arguments(parser)


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """--ray [ADDRESS] and the actor sizes; `engine_settings` reads them. Not part of the run's
    identity: a run started locally can be finished on Ray and the other way round."""
    group = parser.add_argument_group("Ray (pip install \"personarag[ray]\")")
    group.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                       help="shard the queries over a Ray cluster: ADDRESS (auto, ray://HOST:10001), "
                            "or a local cluster started for this run when none is given")
    group.add_argument("--ray-actors", type=_positive_int, metavar="N",
                       help="pipeline actors (each builds and indexes the pipeline once; default: one per node)")
    group.add_argument("--ray-cpus", type=float, metavar="N", help="CPUs per actor (default: 1)")
    group.add_argument("--ray-gpus", type=float, metavar="N",
                       help="GPUs per actor, e.g. the tensor-parallel size of a vLLM model (default: 0)")


@contextmanager
def engine_session(engine: Mapping[str, Any]) -> Iterator[None]:
    """One Ray connection (or local cluster) for all the runs of a command, e.g. BRIGHT's tasks;
    nothing for the local engine."""
    if engine.get("engine") != "ray":
        yield
        return
    from personarag.experiment.ray_engine import cluster

    with cluster(engine.get("ray_address")):
        yield


def engine_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The `Experiment` keywords of the engine flags: engine, ray_address, ray_options."""
    address = getattr(args, "ray", None)
    extra = [f for f in ("ray_actors", "ray_cpus", "ray_gpus") if getattr(args, f, None) is not None]
    if address is None:
        if extra:
            raise InputError(f"--{extra[0].replace('_', '-')} needs --ray [ADDRESS]")
        return {"engine": "local"}
    options = {key: getattr(args, f"ray_{key}") for key in ("actors", "cpus", "gpus") if getattr(args, f"ray_{key}") is not None}
    options = {{"cpus": "num_cpus", "gpus": "num_gpus"}.get(k, k): v for k, v in options.items()}
    return {"engine": "ray", "ray_address": address or None, "ray_options": options}


def add_pipeline_arguments(parser: argparse.ArgumentParser, retriever_help: str) -> None:
    """The stage and batching flags every `eval` command shares; `pipeline_settings` reads them."""
    parser.add_argument("--retriever", metavar="SPEC", help=retriever_help)
    add_stage_arguments(parser)
    parser.add_argument("--k", type=int, help="candidates retrieved per query (default: 100)")
    parser.add_argument("--rerank-depth", type=int, metavar="N",
                        help="rerank only the top N, for rerankers without a --reranker-depth (default: all k)")
    parser.add_argument("--batch-size", type=int, metavar="N", help="queries per pipeline call (default: 64)")


def add_ranking_arguments(parser: argparse.ArgumentParser, default_measures: Iterable[str], *, max_queries: str,
                          cache_dir: str) -> None:
    """What `eval beir` and `eval bright` share after their data flags: the pipeline, measures,
    max_queries, cache_dir and run flags (`ranking_settings` reads them); the strings are helps."""
    add_pipeline_arguments(parser, "e.g. bm25, bm25:rank_bm25, dense:PATH, rrf:bm25+dense:PATH")
    parser.add_argument("--measures", nargs="+", metavar="M",
                        help=f"ir_measures names (default: {' '.join(default_measures)})")
    parser.add_argument("--max-queries", type=int, metavar="N", help=max_queries)
    parser.add_argument("--cache-dir", metavar="DIR", help=cache_dir)
    add_run_arguments(parser)


def add_stage_arguments(parser: argparse.ArgumentParser) -> None:
    """--reranker (with its own --reranker-depth) and --llm-option; `reranker_stages` and
    `llm_options` read them."""
    parser.add_argument("--reranker", metavar="SPEC", action="append", help="a reranker stage; repeat for several")
    parser.add_argument("--reranker-depth", metavar="N", type=_positive_int, action=_RerankerDepth,
                        help="the depth of the --reranker just before it (how many candidates it reranks), e.g. "
                             "--reranker cross-encoder:PATH --reranker-depth 100 --reranker listwise:MODEL --reranker-depth 20")
    parser.add_argument("--llm-option", metavar="KEY=VALUE", action="append",
                        help="a constructor option of every LLM the stages build from a spec, e.g. threads=1, "
                             "cache_dir=DIR, max_batch_size=8 (VALUE is read as YAML); repeat for several")


class _RerankerDepth(argparse.Action):
    """Records `--reranker-depth N` against the position of the `--reranker` given just before it."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, value: Any,
                 option_string: str | None = None) -> None:
        rerankers = getattr(namespace, "reranker", None) or []
        if not rerankers:
            parser.error(f"{option_string} {value} must follow the --reranker SPEC whose depth it sets")
        depths = dict(getattr(namespace, self.dest) or {})
        if len(rerankers) - 1 in depths:
            parser.error(f"{option_string} given twice for --reranker {rerankers[-1]}")
        depths[len(rerankers) - 1] = value
        setattr(namespace, self.dest, depths)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def reranker_stages(args: argparse.Namespace, file: Mapping[str, Any], default: Any = ()) -> list[Any]:
    """The reranker stages from the flags (a --reranker-depth makes its stage a config with that
    `depth`), else the config file's `rerankers`, else `default`."""
    if args.reranker is None:
        rerankers = file.get("rerankers", default)
        return [rerankers] if isinstance(rerankers, (str, dict)) else list(rerankers or [])
    depths = getattr(args, "reranker_depth", None) or {}
    return [{"spec": spec, "params": {"depth": depths[i]}} if i in depths else spec for i, spec in enumerate(args.reranker)]


def llm_options(args: argparse.Namespace, file: Mapping[str, Any]) -> dict[str, Any]:
    """`llm_options` of the config file, updated by each --llm-option KEY=VALUE (VALUE read as YAML:
    1 is a number, true a boolean; quote it, '4', to keep a string)."""
    import yaml

    options = file.get("llm_options") or {}
    if not isinstance(options, Mapping):
        raise InputError(f"llm_options in the config must be a mapping like {{threads: 1}}, got {options!r}")
    options = dict(options)
    for item in getattr(args, "llm_option", None) or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise InputError(f"--llm-option expects KEY=VALUE, e.g. threads=1, got {item!r}")
        try:
            options[key.strip()] = yaml.safe_load(text) if text.strip() else text
        except yaml.YAMLError:
            options[key.strip()] = text
    return options


def with_llm_options(stages: Iterable[Any], options: Mapping[str, Any]) -> list[Any]:
    """The stages with `options` given to every LLM they build from a spec (see
    `personarag.llm.with_llm_options`); options that reach no LLM are an error, not ignored."""
    from personarag.llm import with_llm_options as apply

    stages = list(stages)
    configured = [apply(stage, options) for stage in stages]
    if options and all(new is old for new, old in zip(configured, stages)):
        raise InputError(f"LLM options {sorted(options)} were given, but no stage builds an LLM from a spec: {stages}")
    return configured


# the config keys `ranking_settings` reads (eval beir and eval bright add their data keys)
RANKING_KEYS = (
    "retriever", "rerankers", "llm_options", "k", "rerank_depth", "measures", "batch_size", "max_queries",
    "output_dir", "cache_dir",
)
PIPELINE_KEYS = ("personarag_config", "stages", "k", "rerank_depth", "context_k")
# keys a run writes into its config.json, so that file can be passed back as --config
RECORDED_KEYS = ("command", "run_name", "versions", "pipeline", "data")


def pipeline_settings(args: argparse.Namespace, file: Mapping[str, Any]) -> dict[str, Any]:
    """retriever, rerankers, llm_options, k, rerank_depth and batch_size from the flags, else the config file,
    else the `pipeline` a previous run's config.json recorded, else the defaults."""
    pipeline_file = check_pipeline_section(file)
    stages = list(pipeline_file.get("stages") or [])
    retriever = pick(args.retriever, file, "retriever", stages[0] if stages else None)
    if retriever is None:
        raise InputError("give --retriever SPEC (or retriever in the config), e.g. --retriever bm25")
    return {
        "retriever": retriever,
        "rerankers": reranker_stages(args, file, stages[1:]),
        "llm_options": llm_options(args, file),
        "k": pick(args.k, file, "k", pipeline_file.get("k", 100)),
        "rerank_depth": pick(args.rerank_depth, file, "rerank_depth", pipeline_file.get("rerank_depth")),
        "batch_size": pick(args.batch_size, file, "batch_size", 64),
    }


def ranking_settings(args: argparse.Namespace, file: Mapping[str, Any], default_measures: Iterable[str]) -> dict[str, Any]:
    """What `eval beir` and `eval bright` share: the pipeline settings, measures (checked before any
    indexing), max_queries, output_dir and cache_dir, from the flags, else the file, else defaults."""
    from personarag.evaluation.metrics import parse_measure

    measures = pick(args.measures, file, "measures", list(default_measures))
    settings = {
        **pipeline_settings(args, file),
        "measures": [measures] if isinstance(measures, str) else [str(m) for m in measures],
        "max_queries": pick(args.max_queries, file, "max_queries"),
        "output_dir": pick(args.output_dir, file, "output_dir"),
        "cache_dir": pick(args.cache_dir, file, "cache_dir"),
    }
    positive_ints(settings, "batch_size", "max_queries", "k", "rerank_depth")
    for measure in settings["measures"]:
        parse_measure(measure)
    return settings


def check_pipeline_section(file: Mapping[str, Any]) -> Mapping[str, Any]:
    """The `pipeline:` mapping of a config file; unknown keys under it are an error, not ignored."""
    section = file.get("pipeline") or {}
    if not isinstance(section, Mapping):
        raise InputError(f"'pipeline' in the config must be a mapping with keys {list(PIPELINE_KEYS)}, got {section!r}")
    unknown = sorted(set(section) - set(PIPELINE_KEYS))
    if unknown:
        raise InputError(f"unknown keys under 'pipeline': {unknown}; valid keys: {list(PIPELINE_KEYS)}")
    return section


def positive_ints(settings: Mapping[str, Any], *keys: str) -> None:
    for key in keys:
        value = settings.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise InputError(f"{key} must be a positive integer, got {value!r}")


@contextmanager
def claimed_output_dir(path: str | None) -> Iterator[Path]:
    """OUT, checked (not a file, writable, not full) and locked for the run, before any data or
    model is loaded; a second run into OUT meanwhile is refused at once."""
    from personarag.experiment.artifacts import FolderLock, check_output_dir

    if not path:
        raise InputError("give --output-dir OUT (or output_dir in the config file)")
    out = check_output_dir(path)
    with FolderLock(out):
        yield out


def read_run_config(path: str | None, command: str, allowed: Iterable[str]) -> dict[str, Any]:
    """`read_config_file`, and a run's config.json must be one `command` wrote."""
    file = read_config_file(path, allowed)
    if file.get("command", command) != command:
        raise InputError(f"{path} is the config of `personarag {file['command']}`, not `{command}`")
    return file


def ranking_pipeline(settings: Mapping[str, Any], first_stage: Any = None) -> Pipeline:
    """The pipeline of `eval beir` / `eval bright` from their settings (`first_stage`: what replaces
    the retriever spec, e.g. a query rewriter around it), checked before any data is read."""
    from personarag.experiment.preflight import check_pipeline

    stages = [settings["retriever"] if first_stage is None else first_stage, *settings["rerankers"]]
    pipeline = Pipeline(with_llm_options(stages, settings["llm_options"]), k=settings["k"],
                        rerank_depth=settings["rerank_depth"])
    if pipeline.retriever is None:
        raise InputError(f"the first stage must be a retriever, got {settings['retriever']!r}")
    check_pipeline(pipeline)  # model paths and depths
    return pipeline


def evaluate_ranking(pipeline: Pipeline, data: Any, settings: Mapping[str, Any], out: Path, *, overwrite: bool,
                     config: Mapping[str, Any], prefix: str, engine: Mapping[str, Any] | None = None) -> Any:
    """One pipeline over a RankingDataset into `out` (resumable, see `personarag.experiment`): its result."""
    from personarag.experiment.runner import Experiment

    experiment = Experiment(pipeline, data, settings["measures"], output_dir=out, batch_size=settings["batch_size"],
                            overwrite=overwrite, config=dict(config), prefix=prefix, **dict(engine or {}))
    return next(iter(experiment.run().systems.values()))


def read_config_file(path: str | None, allowed: Iterable[str]) -> dict[str, Any]:
    """The run config in `path` (empty without one); unknown keys are an error, not ignored."""
    if not path:
        return {}
    config = load_config(path)
    allowed = set(allowed) | set(RECORDED_KEYS)
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise InputError(f"{path}: unknown keys {unknown}; allowed: {sorted(allowed)}")
    return config


def pick(flag: T | None, config: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """A flag given on the command line wins over the config file, which wins over the default."""
    if flag is not None:
        return flag
    value = config.get(key)
    return default if value is None else value


