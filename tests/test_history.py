"""User-history retrieval: same top-k and scores as the per-profile rank_bm25 loop of the
LaMP reference code, indexing each history once, recency and random baselines."""

from __future__ import annotations

import functools
import operator

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from personarag import Document, InputError, Pipeline, Query, User, registry
from personarag.personal.history import HistoryRetriever, RandomRetriever, RecencyRetriever
from personarag.personal.bm25_arrays import group_entries, sequential_sums

TEXTS = [
    "the guitar strings sound bright and last long",
    "the strings broke after a week",
    "the the the drum kit is loud",
    "bright bright tone from the new amp",
    "the pedal adds warm overdrive to the amp",
    "cheap cable , the cable crackles",
    "Guitar case fits the guitar well",
    "the strings sound bright and last long",  # near-duplicate: a tie candidate
    "the strings sound bright and last long",
    "a the an the of the",
]


def make_users() -> list[User]:
    rng = np.random.default_rng(3)
    users = []
    for u in range(6):
        size = [1, 2, 3, 5, 7, 10][u]
        picks = rng.choice(len(TEXTS), size=size, replace=False)
        history = tuple(
            Document(f"u{u}-i{j}", TEXTS[p], meta={"date": f"20{10 + (j * 7) % 9}-01-0{1 + j % 9}"})
            for j, p in enumerate(picks)
        )
        users.append(User(f"u{u}", history))
    return users


QUERY_TEXTS = [
    "bright strings",
    "the guitar the guitar",  # repeated tokens count twice in rank_bm25
    "amp overdrive pedal",
    "the",  # a term in most documents: idf floored at epsilon * mean idf
    "nothing matches here",
    "Guitar cable",
]


def reference_top_k(user: User, text: str, k: int) -> tuple[list[str], np.ndarray]:
    """The LaMP / CFRAG reference: a fresh BM25Okapi over the profile, for every query."""
    corpus = [d.full_text for d in user.history]
    bm25 = BM25Okapi([c.split() for c in corpus])
    scores = bm25.get_scores(text.split())
    top = bm25.get_top_n(text.split(), list(user.history), n=k)
    return [d.id for d in top], scores


def test_history_bm25_equals_per_profile_rank_bm25_scores_and_top_k():
    users = make_users()
    queries = [Query(f"q{u}-{t}", text, user=user) for u, user in enumerate(users) for t, text in enumerate(QUERY_TEXTS)]
    retriever = HistoryRetriever("bm25")
    for k in (1, 3, 100):
        rankings = retriever.retrieve(queries, k=k)
        for query, ranking in zip(queries, rankings):
            ids, ref_scores = reference_top_k(query.user, query.text, k)
            assert ranking.ids == ids, (query.id, k)
            by_id = {d.id: i for i, d in enumerate(query.user.history)}
            got = np.array([s.score for s in ranking.docs])
            np.testing.assert_array_equal(got, ref_scores[[by_id[i] for i in ranking.ids]])
    # one index for all queries: each distinct history stored once, not per example
    assert len(retriever.store) == sum(len(u.history) for u in users)



def test_history_bm25_bit_exact_on_long_zipf_histories_in_several_batches():
    # hundreds of distinct terms per user: the epsilon mean is a long sequential sum, where
    # any other summation order would round differently
    rng = np.random.default_rng(7)
    words = [f"w{i}" for i in range(400)]
    zipf = 1.0 / np.arange(1, 401)
    users = [
        User(f"z{u}", tuple(
            Document(f"z{u}-{j}", " ".join(rng.choice(words, size=int(rng.integers(1, 60)), p=zipf / zipf.sum())))
            for j in range(int(rng.integers(20, 70)))
        ))
        for u in range(8)
    ]
    queries = [Query(f"q{u}-{t}", " ".join(rng.choice(words[:60], size=6)), user=user) for u, user in enumerate(users) for t in range(3)]
    retriever = HistoryRetriever("bm25")
    got = retriever.bm25.scores_many([q.user for q in queries[:9]], [q.text for q in queries[:9]])
    got += retriever.bm25.scores_many([q.user for q in queries[9:]], [q.text for q in queries[9:]])
    for query, scores in zip(queries, got):
        reference = BM25Okapi([d.full_text.split() for d in query.user.history]).get_scores(query.text.split())
        assert scores.tolist() == reference.tolist(), query.id


def test_sequential_sums_add_left_to_right_as_python_does():
    rng = np.random.default_rng(0)
    counts = np.array([0, 1, 2, 3, 5, 8, 1000, 1500, 4000, 7, 0, 33, 600])
    values = rng.standard_normal(int(counts.sum())) * 10.0 ** rng.integers(-6, 6, int(counts.sum()))
    starts = np.cumsum(counts) - counts
    expected = [functools.reduce(operator.add, values[s:s + n].tolist(), 0) for s, n in zip(starts, counts)]
    assert sequential_sums(values, counts).tolist() == expected
    # numpy's pairwise summation rounds these long runs differently: the order matters
    assert any(float(np.sum(values[s:s + n])) != e for s, n, e in zip(starts, counts, expected))


def test_count_in_order_equals_a_counter_per_text():
    from collections import Counter

    from personarag.personal.bm25_arrays import count_in_order

    rng = np.random.default_rng(11)
    lengths = rng.integers(0, 40, size=300)
    lengths[[0, 7, 299]] = 0  # empty texts first, inside and last
    stream = rng.zipf(1.3, size=int(lengths.sum())) % 500
    terms, counts, entries = count_in_order(stream, lengths, 500)
    start, at = 0, 0
    for length, n in zip(lengths.tolist(), entries.tolist()):
        expected = Counter(stream[start:start + length].tolist())
        assert list(zip(terms[at:at + n].tolist(), counts[at:at + n].tolist())) == list(expected.items())
        start, at = start + length, at + n
    assert at == len(terms) and start == len(stream)


def test_group_tokens_packed_sort_equals_stable_argsort():
    rng = np.random.default_rng(1)
    block = np.sort(rng.integers(0, 40, 6000))
    term = rng.integers(0, 500, 6000)
    expected = np.lexsort((np.arange(6000), term, block))
    for pack in (True, False):
        tok, group, _ = group_entries(block, term, 500, pack=pack)
        np.testing.assert_array_equal(tok, expected)
        assert (np.diff(group) >= 0).all()
        assert ((np.diff(group) != 0) == ((np.diff(block[tok]) != 0) | (np.diff(term[tok]) != 0))).all()


def assert_scores_equal_reference(retriever, users, texts):
    got = retriever.bm25.scores_many(users, texts)
    for user, text, scores in zip(users, texts, got):
        reference = BM25Okapi([d.full_text.split() for d in user.history]).get_scores(text.split())
        assert scores.tolist() == reference.tolist(), (user.id, text)


def test_history_bm25_a_longer_history_replaces_the_users_block_and_leaves_others_alone():
    users = make_users()
    retriever = HistoryRetriever("bm25")
    retriever.retrieve([Query(f"a{i}", "bright strings", user=u) for i, u in enumerate(users)], k=5)
    bm25, store = retriever.bm25, retriever.store
    live_rows = sum(len(u.history) for u in users)
    keys, weights = bm25._key.copy(), bm25._weight.copy()
    # the same user id with one item more (an item added to the user's history)
    longer = User("u3", users[3].history + (Document("u3-new", "bright new strings for the amp"),))
    ranking = retriever.retrieve([Query("b", "bright strings", user=longer)], k=5)[0]
    assert ranking.ids == reference_top_k(longer, "bright strings", 5)[0]
    assert "u3-new" in ranking.ids
    assert len(store) == live_rows + 1  # the old block is retired, not kept beside the new one
    assert store.dead_rows == len(users[3].history)
    assert longer in store and users[3] not in store
    # the new block's postings were appended; nothing built before was rebuilt or moved
    assert np.array_equal(bm25._key[: len(keys)], keys) and np.array_equal(bm25._weight[: len(keys)], weights)
    assert len(bm25._key) > len(keys) and set((bm25._key[len(keys):] >> 32).tolist()) == {store.block(longer)}
    assert retriever.bm25.tokens.tokenized == len({d.full_text for u in users for d in u.history}) + 1
    # an edited text under the same item ids is another history too
    edited = User("u3", tuple(Document(d.id, "drum kit " + d.text) for d in longer.history))
    assert_scores_equal_reference(retriever, [edited, users[4]], ["drum kit", "amp"])
    assert edited in store and longer not in store


def test_history_bm25_scores_a_batch_holding_two_histories_of_one_user_id():
    users = make_users()
    retriever = HistoryRetriever("bm25")
    variant = User("u5", users[5].history[:4])
    batch = [users[5], variant, users[2], variant, users[5]]
    assert_scores_equal_reference(retriever, batch, ["bright strings", "the amp", "the", "guitar", "cable"])
    rankings = retriever.retrieve([Query(f"q{i}", "bright strings", user=u) for i, u in enumerate(batch)], k=3)
    assert [r.ids for r in rankings] == [reference_top_k(u, "bright strings", 3)[0] for u in batch]


def test_profile_store_compacts_retired_rows_and_indexes_follow():
    from personarag.personal.profiles import ItemEmbeddings

    rng = np.random.default_rng(5)
    words = [f"w{i}" for i in range(50)]

    def history(user: int, size: int) -> tuple[Document, ...]:
        return tuple(Document(f"{user}-{j}", " ".join(rng.choice(words, size=8))) for j in range(size))

    retriever = HistoryRetriever("bm25")
    encoder = HashEncoder()
    items = ItemEmbeddings(retriever.store, lambda texts: encoder.encode(list(texts)))
    current = {u: User(f"c{u}", history(u, 30)) for u in range(40)}
    assert_scores_equal_reference(retriever, list(current.values()), ["w1 w2"] * 40)
    items.sync()
    for step in range(60):  # one user's history grows an item at a time
        u = step % 5
        old = current[u]
        current[u] = User(old.id, old.history + (Document(f"{u}-x{step}", " ".join(rng.choice(words, size=8))),))
        assert_scores_equal_reference(retriever, [current[u], current[7]], ["w3 w4 w3", "w5"])
    store = retriever.store
    assert store.generation >= 1  # dead rows outnumbered live ones at least once
    assert store.dead_rows <= max(len(store), 1024)
    assert len(store.items) == len(store) + store.dead_rows
    users = list(current.values())
    assert_scores_equal_reference(retriever, users, ["w1 w9 w10"] * len(users))
    items.sync()
    encoded = encoder.texts_encoded
    for user in users:  # embeddings followed the compactions without re-encoding old rows
        np.testing.assert_allclose(items.of(user), HashEncoder().encode([d.full_text for d in user.history]), atol=1e-6)
    assert encoder.texts_encoded == encoded


def test_item_embeddings_do_not_re_encode_a_history_that_comes_back():
    from personarag.personal.profiles import ItemEmbeddings, ProfileStore

    store, encoder = ProfileStore(replace=True), HashEncoder()
    items = ItemEmbeddings(store, lambda texts: encoder.encode(list(texts)))
    first = make_users()[4]
    longer = User(first.id, first.history + (Document("extra", "a brand new text"),))
    for user in (first, longer, first, longer):  # e.g. a train-split pool and a dev-split query
        np.testing.assert_allclose(items.of(user), HashEncoder().encode([d.full_text for d in user.history]), atol=1e-6)
    assert encoder.texts_encoded == len({d.full_text for d in longer.history})
    assert store.dead_rows == 3 * len(first.history) + 1  # three histories retired, in turn


def test_profile_store_without_replace_keeps_every_history_of_an_id_side_by_side():
    # the collaborative pool may hold a user's train profile while a query brings the dev one
    from personarag.personal.profiles import ProfileBM25, ProfileStore

    store = ProfileStore()
    first = make_users()[4]
    longer = User(first.id, first.history + (Document("extra", "bright amp"),))
    bm25 = ProfileBM25(store, str.split)
    for _ in range(2):
        got = bm25.scores_many([first, longer], ["bright amp", "bright amp"])
        for user, scores in zip((first, longer), got):
            reference = BM25Okapi([d.full_text.split() for d in user.history]).get_scores("bright amp".split())
            assert scores.tolist() == reference.tolist()
    assert store.n_blocks == 2 and store.dead_rows == 0 and first in store and longer in store


def test_token_cache_tokenizes_each_text_once_and_round_trips_through_export():
    from personarag.personal.tokens import TokenCache, content_hash

    users = make_users()
    cache = TokenCache(str.split, "split")
    first = HistoryRetriever("bm25", tokens=cache)
    queries = [Query(f"q{i}", "bright strings", user=u) for i, u in enumerate(users)]
    expected = [r.ids for r in first.retrieve(queries, k=3)]
    distinct = len({(d.title, d.text) for u in users for d in u.history})
    assert cache.tokenized == distinct
    second = HistoryRetriever("bm25", tokens=cache)  # a fresh index over the cached bags
    assert [r.ids for r in second.retrieve(queries, k=3)] == expected
    assert cache.tokenized == distinct
    assert "tokens" not in second.config()["params"]
    terms, bags = cache.export()
    text = users[5].history[0].full_text
    packed, length = bags[content_hash(text)]
    assert length == len(text.split())
    assert [terms[t] for t in (packed >> 32).tolist()] == list(dict.fromkeys(text.split()))
    loaded = TokenCache(str.split, "split")
    loaded.load(terms, bags)
    hashes = [content_hash(d.full_text) for d in users[5].history]
    again = loaded.bags_of(users[5].history, keys=hashes)
    assert loaded.tokenized == 0
    assert again.lengths.tolist() == [len(d.full_text.split()) for d in users[5].history]
    with pytest.raises(InputError, match="holds 'split' tokens"):
        HistoryRetriever("bm25", tokenizer="words", tokens=cache)


def test_history_bm25_words_tokenizer_is_case_insensitive():
    user = User("u", (Document("a", "Guitar strings"), Document("b", "drum kit"), Document("c", "cable")))
    ranking = HistoryRetriever("bm25", tokenizer="words").retrieve(Query("q", "GUITAR!", user=user), k=3)[0]
    assert ranking.ids[0] == "a" and ranking.docs[0].score > 0 and ranking.docs[1].score == 0


def test_empty_history_gives_empty_ranking_and_missing_user_is_an_error():
    retriever = HistoryRetriever("bm25")
    assert retriever.retrieve(Query("q", "bright", user=User("nobody")), k=5)[0].docs == ()
    with pytest.raises(InputError, match="has no user"):
        retriever.retrieve(Query("q", "bright"), k=5)
    with pytest.raises(InputError, match="takes no corpus"):
        retriever.index([Document("d", "text")])


def test_recency_newest_first_undated_last_stable():
    history = (
        Document("old", "x", meta={"date": "2001-05-01"}),
        Document("undated1", "x"),
        Document("new", "x", meta={"date": "2019-02-03"}),
        Document("mid", "x", meta={"date": "2010-01-01"}),
        Document("undated2", "x", meta={"date": ""}),
        Document("new-too", "x", meta={"date": "2019-02-03"}),
    )
    ranking = RecencyRetriever().retrieve(Query("q", "anything", user=User("u", history)), k=10)[0]
    assert ranking.ids == ["new", "new-too", "mid", "old", "undated1", "undated2"]
    assert [s.score for s in ranking.docs] == sorted((s.score for s in ranking.docs), reverse=True)


def test_recency_parses_dates_instead_of_comparing_text():
    history = (
        Document("unpadded", "x", meta={"date": "2019-3-5"}),
        Document("october", "x", meta={"date": "2019-10-01"}),
        Document("morning", "x", meta={"date": "2019-10-01T08:00"}),
        Document("evening", "x", meta={"date": "2019-10-01 19:30:05"}),
        Document("year", "x", meta={"date": "2019"}),
        Document("month", "x", meta={"date": "2019-02"}),
        Document("december", "x", meta={"date": "2018-12"}),
        Document("offset", "x", meta={"date": "2019-10-01T23:30-02:00"}),  # 2019-10-02 01:30 UTC
        Document("undated", "x"),
    )
    ranking = RecencyRetriever().retrieve(Query("q", "anything", user=User("u", history)), k=20)[0]
    assert ranking.ids == [
        "offset", "evening", "morning", "october", "unpadded", "month", "year", "december", "undated",
    ]


def test_unreadable_dates_are_errors_naming_query_user_and_item():
    history = (Document("a", "x", meta={"date": "2020-01-01"}), Document("b", "x", meta={"date": "03/05/2021"}))
    with pytest.raises(InputError, match=r"query 'q7', user 'u1', item 'b': date '03/05/2021' is not a date; expected YYYY"):
        RecencyRetriever().retrieve(Query("q7", "anything", user=User("u1", history)), k=5)
    bad_day = (Document("c", "x", meta={"date": "2019-02-30"}),)
    with pytest.raises(InputError, match=r"item 'c': date '2019-02-30' is not a valid date"):
        RecencyRetriever().retrieve(Query("q8", "anything", user=User("u1", bad_day)), k=5)


def test_one_date_parser_serves_recency_and_user_embeddings():
    import datetime as dt

    from personarag.personal import user_embeddings
    from personarag.personal.dates import parse_date
    from personarag.personal.user_embeddings import recency_weights

    assert user_embeddings.parse_date is parse_date
    assert parse_date("2019-3-5") == dt.datetime(2019, 3, 5) == parse_date(" 2019-03-05 ")
    assert parse_date("2019-03-05T10:20:30.25Z") == dt.datetime(2019, 3, 5, 10, 20, 30, 250000)
    assert parse_date(2019) == dt.datetime(2019, 1, 1) and parse_date(dt.date(2019, 3, 5)) == dt.datetime(2019, 3, 5)
    assert parse_date(None) is None and parse_date("  ") is None
    for bad in ("soon", "2019-13", "2019/03/05", "19-03-05", True):
        with pytest.raises(InputError):
            parse_date(bad, "user 'u'")
    history = (
        Document("a", "x", meta={"date": "2019-3-5"}),
        Document("b", "x", meta={"date": "2019-10-01"}),
        Document("c", "x"),
    )
    # rank: b is newest (text order said a); date: a is 210 days older than b
    np.testing.assert_allclose(recency_weights(history, 1.0, "rank"), np.exp(-np.array([1.0, 0.0, 2.0])))
    np.testing.assert_allclose(recency_weights(history, 1.0, "date"), np.exp(-np.array([210, 0, 210]) / 365.25))
    with pytest.raises(InputError, match="item 'z': date '5 March'"):
        recency_weights(history + (Document("z", "x", meta={"date": "5 March"}),), 1.0, "date")


def test_random_is_seeded_per_query_and_covers_the_history():
    user = make_users()[5]
    q1, q2 = Query("q1", "a", user=user), Query("q2", "a", user=user)
    first = RandomRetriever(seed=1).retrieve([q1, q2], k=100)
    again = RandomRetriever(seed=1).retrieve([q2, q1], k=100)
    assert first[0].ids == again[1].ids and first[1].ids == again[0].ids  # batch order does not matter
    assert sorted(first[0].ids) == sorted(d.id for d in user.history)
    assert first[0].ids != RandomRetriever(seed=2).retrieve([q1], k=100)[0].ids
    assert first[0].ids != first[1].ids


def test_history_specs_build_and_run_in_a_pipeline_without_corpus():
    users = make_users()
    for spec in ("history:bm25", "recency", "random"):
        retriever = registry.build(spec, role="retriever")
        assert retriever.needs_corpus is False
        pipeline = Pipeline([spec], k=2)
        rankings = pipeline.run([Query("q", "bright strings", user=users[4])])
        assert len(rankings[0].docs) == 2
        assert {d.id for d in rankings[0].docs} <= {d.id for d in users[4].history}
    rebuilt = registry.build_from_config(HistoryRetriever("bm25", k1=1.2).config())
    assert rebuilt.bm25.k1 == 1.2


def test_history_spec_errors_name_the_valid_forms():
    with pytest.raises(InputError, match="'bm25' or 'dense:MODEL'"):
        HistoryRetriever("splade")
    with pytest.raises(InputError, match="at least two"):
        HistoryRetriever("rrf:bm25")


class HashEncoder:
    """A deterministic bag-of-words hashing encoder: texts sharing words get close vectors."""

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self.texts_encoded = 0

    def encode(self, texts, batch_size=32, task=None, **_):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                out[row, hash_word(word) % self.dim] += 1.0
        self.texts_encoded += len(texts)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


def hash_word(word: str) -> int:
    import zlib

    return zlib.crc32(word.encode())


def test_history_dense_encodes_each_item_once_and_ranks_by_inner_product():
    users = make_users()
    encoder = HashEncoder()
    retriever = HistoryRetriever("dense:hash", encoder=encoder)
    queries = [Query(f"q{i}", "bright strings", user=u) for i, u in enumerate(users)]
    rankings = retriever.retrieve(queries, k=100)
    items = len({d.full_text for u in users for d in u.history})  # each distinct text once
    assert items < sum(len(u.history) for u in users)
    assert encoder.texts_encoded == items + len(queries)
    retriever.retrieve(queries, k=100)
    assert encoder.texts_encoded == items + 2 * len(queries)  # items not re-encoded
    for query, ranking in zip(queries, rankings):
        q = encoder.encode([query.text])[0]
        scores = np.array([float(encoder.encode([d.full_text])[0] @ q) for d in query.user.history])
        order = np.argsort(-scores, kind="stable")
        assert ranking.ids == [query.user.history[i].id for i in order]
        np.testing.assert_allclose([s.score for s in ranking.docs], scores[order], atol=1e-6)


def test_history_rrf_fuses_bm25_and_dense():
    user = User("u", (Document("a", "bright strings"), Document("b", "drum kit"), Document("c", "bright amp")))
    retriever = HistoryRetriever("rrf:bm25+dense:hash", encoder=HashEncoder())
    ranking = retriever.retrieve(Query("q", "bright strings", user=user), k=3)[0]
    assert ranking.ids[0] == "a" and ranking.ids[-1] == "b"
    assert ranking.docs[0].score == pytest.approx(2 / 61)


@pytest.mark.slow
def test_history_dense_with_minilm_prefers_the_topical_item(minilm_path):
    user = User(
        "u",
        (
            Document("guitar", "New nickel strings for my electric guitar sound great."),
            Document("recipe", "A quick pasta recipe with garlic and olive oil."),
            Document("weather", "Heavy rain is expected over the weekend."),
        ),
    )
    retriever = HistoryRetriever(f"dense:{minilm_path}", device="cpu")
    ranking = retriever.retrieve(Query("q", "which guitar strings should I buy?", user=user), k=3)[0]
    assert ranking.ids[0] == "guitar"


def test_pool_bm25_over_several_histories_equals_bm25s_lucene_over_their_union():
    import bm25s

    users = make_users()
    retriever = HistoryRetriever("bm25")
    for pool, text in ((users[2:5], "bright strings amp"), (users[:6], "guitar cable the"), (users[4:5], "amp")):
        got = np.concatenate(retriever.bm25.pool_scores(pool, text))
        model = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
        model.index([d.full_text.split() for u in pool for d in u.history], show_progress=False)
        # bm25s's Lucene variant leaves out BM25's constant (k1 + 1) numerator factor
        np.testing.assert_allclose(got, (1.5 + 1) * model.get_scores(text.split()), rtol=1e-5)


def test_kept_postings_are_reused_only_for_unchanged_histories_and_same_parameters():
    from personarag.personal.tokens import TokenCache

    users = make_users()
    cache = TokenCache(str.split, "split")
    HistoryRetriever("bm25", tokens=cache).bm25.scores_many(users[:4], ["amp"] * 4)
    assert set(cache.postings) == {u.id for u in users[:4]}
    kept = {uid: entry[2] for uid, entry in cache.postings.items()}
    # a fresh index: u0, u2 kept; u1 changed; u4, u5 new; in an order that interleaves them
    changed = User("u1", users[1].history + (Document("u1-new", "the amp and the guitar"),))
    batch = [users[5], users[2], changed, users[0], users[4]]
    texts = ["bright strings", "the amp", "the guitar the guitar", "Guitar cable", "the"]
    fresh = HistoryRetriever("bm25", tokens=cache)
    assert_scores_equal_reference(fresh, batch, texts)
    assert cache.postings["u0"][2] is kept["u0"] and cache.postings["u2"][2] is kept["u2"]
    assert cache.postings["u1"][2] is not kept["u1"]  # rebuilt for the new history
    assert set(cache.postings) == {u.id for u in users}
    # other BM25 parameters: nothing reused, scores follow the new parameters
    other = HistoryRetriever("bm25", k1=1.2, b=0.5, tokens=cache)
    got = other.bm25.scores_many(batch, texts)
    for user, text, scores in zip(batch, texts, got):
        bm25 = BM25Okapi([d.full_text.split() for d in user.history], k1=1.2, b=0.5)
        assert scores.tolist() == bm25.get_scores(text.split()).tolist()
    assert cache.postings["u0"][1] == (1.2, 0.5, 0.25)


@pytest.mark.slow
@pytest.mark.parametrize("folder", ["LaMP_2_movielens_tmdb", "LaMP_3_amazon_mi", "LaMP_4_huffpost", "LaMP_5_acl_anthology"])
def test_history_bm25_equals_reference_on_real_lamp_dev(folder):
    from conftest import shared_data

    from personarag.evaluation.lamp import load_lamp
    from personarag.personal.tokens import TokenCache

    path = shared_data("lamp", folder, "dev_questions.json")
    queries = load_lamp(folder[:6], path).queries[::5]
    cache = TokenCache(str.split, "split")
    for run in ("cold", "warm token cache"):
        rankings = HistoryRetriever("bm25", tokens=cache).retrieve(queries, k=5)
        for query, ranking in zip(queries, rankings):
            ids, scores = reference_top_k(query.user, query.text, 5)
            assert ranking.ids == ids, (run, query.id)
            position = {d.id: i for i, d in enumerate(query.user.history)}
            assert [s.score for s in ranking.docs] == [scores[position[i]] for i in ids], (run, query.id)
