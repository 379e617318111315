"""Pipeline: retriever -> rerankers -> generator, each given as an object or a spec string."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from personarag import registry
from personarag.component import Component
from personarag.errors import InputError, decode_utf8
from personarag.generators.base import Generator
from personarag.rerankers.base import Reranker
from personarag.retrievers.base import Retriever
from personarag.types import Corpus, Document, Output, Query, Ranking, User

CONFIG_VERSION = 1


class Pipeline:
    """Runs its stages in order over a batch of queries.

    Stages: at most one retriever first (fuse several with `rrf:` or `wsum:`), then any
    number of rerankers, then at most one generator. A pipeline without a retriever starts
    each query with an empty candidate list (the "no retrieval" baseline of LaMP).
    `rerank_depth` is the depth of the rerankers that carry none of their own (`depth=`).
    """

    def __init__(
        self,
        stages: Sequence[str | Component | Mapping[str, Any]],
        corpus: Corpus | Iterable[Document] | None = None,
        *,
        k: int = 100,
        rerank_depth: int | None = None,
        context_k: int = 5,
    ) -> None:
        if isinstance(stages, (str, Component)):
            stages = [stages]
        built = [registry.build(stage) for stage in stages]
        self.retriever: Retriever | None = None
        self.rerankers: list[Reranker] = []
        self.generator: Generator | None = None
        for position, stage in enumerate(built):
            if isinstance(stage, Retriever):
                if self.retriever is not None:
                    raise InputError(
                        f"stage {position}: a second retriever ({stage!r}); fuse retrievers with "
                        "'rrf:A+B' or 'wsum:A+B' instead of listing them"
                    )
                if self.rerankers or self.generator:
                    raise InputError(f"stage {position}: the retriever must come first")
                self.retriever = stage
            elif isinstance(stage, Reranker):
                if self.generator is not None:
                    raise InputError(f"stage {position}: reranker {stage!r} after the generator")
                self.rerankers.append(stage)
            elif isinstance(stage, Generator):
                if self.generator is not None:
                    raise InputError(f"stage {position}: a second generator ({stage!r})")
                self.generator = stage
            else:
                raise InputError(f"stage {position}: {type(stage).__name__} is not a retriever, reranker or generator")
        for name, value in (("k", k), ("context_k", context_k)):
            if not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        self.k = k
        self.rerank_depth = rerank_depth
        self.context_k = context_k
        self._indexed = False
        self.timings: dict[str, float] = {}  # stage name -> wall seconds of the last retrieve/run
        if corpus is not None:
            self.index(corpus)

    @property
    def stages(self) -> list[Component]:
        out: list[Component] = []
        if self.retriever is not None:
            out.append(self.retriever)
        out.extend(self.rerankers)
        if self.generator is not None:
            out.append(self.generator)
        return out

    def validate(self) -> Pipeline:
        """Cheap checks of every stage (model paths, LLMs that cannot answer, cache folders), to call
        before loading data or retrieving; raises InputError. See `Component.validate`."""
        for stage in self.stages:
            stage.validate()
        return self

    def index(self, corpus: Corpus | Iterable[Document]) -> Pipeline:
        if self.retriever is None:
            raise InputError("this pipeline has no retriever, so there is nothing to index")
        self.retriever.index(corpus)
        self._indexed = True
        return self

    def fit(self, users: Iterable[User] | None = None, *, store: Any = None) -> Pipeline:
        """Give the users (or a user store: a `UserStore`, a path or a URL) to every stage that
        needs them (those with a `fit(users=..., store=...)` hook, e.g. `collaborative`, including
        the parts of a fusion), so no stage depends on which queries come in one batch."""
        if (users is None) == (store is None):
            raise InputError("Pipeline.fit takes exactly one of users= or store=")
        if users is not None:
            users = list(users)
        elif not hasattr(store, "changes_since"):
            from personarag.personal.store import UserStore

            store = UserStore(store)  # opened once, shared by every stage
        for stage in self._fittable():
            stage.fit(users=users) if users is not None else stage.fit(store=store)  # type: ignore[attr-defined]
        return self

    def _fittable(self) -> list[Component]:
        found, todo = [], list(self.stages)
        while todo:
            stage = todo.pop(0)
            if callable(getattr(stage, "fit", None)):
                found.append(stage)
            todo.extend(part for part in getattr(stage, "retrievers", ()) if isinstance(part, Component))
        return found

    def retrieve(self, queries: Sequence[Query] | Query) -> list[Ranking]:
        """Retrieval and reranking only: the ranked candidates of each query."""
        batch = [queries] if isinstance(queries, Query) else list(queries)
        self.timings = {}
        if self.retriever is None:
            rankings = [Ranking(query=q, docs=()) for q in batch]
        else:
            if not self._indexed and self.retriever.needs_corpus:
                raise InputError("call pipeline.index(corpus) (or pass corpus=) before running it")
            with self._timed(self.retriever):
                rankings = self.retriever.retrieve(batch, k=self.k)
        for reranker in self.rerankers:  # a stage's own depth wins over the pipeline's default
            with self._timed(reranker):
                rankings = reranker.rerank(rankings, depth=reranker.depth or self.rerank_depth)
        return rankings

    def run(self, queries: Sequence[Query] | Query) -> list[Ranking] | list[Output]:
        """Rankings when the pipeline has no generator, else one Output per query."""
        rankings = self.retrieve(queries)
        if self.generator is None:
            return rankings
        with self._timed(self.generator):
            return self.generator.generate([r.top(self.context_k) for r in rankings])

    @contextlib.contextmanager
    def _timed(self, stage: Component) -> Iterator[None]:
        """Wall seconds of each stage in the last `retrieve`/`run` call, in `self.timings`
        (keyed by stage name; a repeated name gets a #2, #3 suffix)."""
        name = stage.spec_name or type(stage).__name__
        key, n = name, 1
        while key in self.timings:
            n += 1
            key = f"{name}#{n}"
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[key] = time.perf_counter() - started

    def __call__(self, query: Query | str, user: Any = None) -> Ranking | Output:
        """One query, as a Query or plain text."""
        if isinstance(query, str):
            query = Query(id="q0", text=query, user=user)
        return self.run([query])[0]

    # --- configs ---------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {
            "personarag_config": CONFIG_VERSION,
            "stages": [stage.config() for stage in self.stages],
            "k": self.k,
            "rerank_depth": self.rerank_depth,
            "context_k": self.context_k,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any], corpus: Corpus | Iterable[Document] | None = None) -> Pipeline:
        if "stages" not in config:
            raise InputError(f"a pipeline config needs a 'stages' list, got keys {sorted(config)}")
        return cls(
            config["stages"],
            corpus,
            k=config.get("k", 100),
            rerank_depth=config.get("rerank_depth"),
            context_k=config.get("context_k", 5),
        )

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump_config(self.config(), path.suffix), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path, corpus: Corpus | Iterable[Document] | None = None) -> Pipeline:
        return cls.from_config(load_config(path), corpus)

    def __repr__(self) -> str:
        return f"Pipeline({self.stages!r}, k={self.k})"


def dump_config(config: Mapping[str, Any], suffix: str = ".json") -> str:
    if suffix in (".yaml", ".yml"):
        import yaml

        return yaml.safe_dump(dict(config), sort_keys=False)
    return json.dumps(config, indent=2) + "\n"


def load_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file {path} does not exist")
    text = decode_utf8(path.read_bytes(), str(path))
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as error:  # yaml and json raise different types; both mean a malformed file
        raise InputError(f"{path}: not valid {path.suffix.lstrip('.') or 'json'}: {error}") from error
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data
