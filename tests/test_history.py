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
from personarag.personal.profiles import _group_tokens, sequential_sums

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


def test_group_tokens_packed_sort_equals_stable_argsort():
    rng = np.random.default_rng(1)
    block = np.sort(rng.integers(0, 40, 6000))
    term = rng.integers(0, 500, 6000)
    expected = np.lexsort((np.arange(6000), term, block))
    for pack in (True, False):
        tok, group = _group_tokens(block, term, 500, pack=pack)
        np.testing.assert_array_equal(tok, expected)
        assert (np.diff(group) >= 0).all()
        assert ((np.diff(group) != 0) == ((np.diff(block[tok]) != 0) | (np.diff(term[tok]) != 0))).all()


def test_history_bm25_extends_incrementally_and_keeps_same_id_different_history_apart():
    users = make_users()
    retriever = HistoryRetriever("bm25")
    retriever.retrieve([Query("a", "bright strings", user=users[3])], k=5)
    rows_before = len(retriever.store)
    # same user id, another history (e.g. a later split): its own rows, its own statistics
    other = User("u3", users[5].history)
    ranking = retriever.retrieve([Query("b", "bright strings", user=other)], k=5)[0]
    ids, _ = reference_top_k(other, "bright strings", 5)
    assert ranking.ids == ids
    assert len(retriever.store) == rows_before + len(other.history)
    retriever.retrieve([Query("c", "amp", user=users[3])], k=5)  # seen again: nothing re-indexed
    assert len(retriever.store) == rows_before + len(other.history)


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
    items = sum(len(u.history) for u in users)
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


@pytest.mark.slow
@pytest.mark.parametrize("folder", ["LaMP_3_amazon_mi", "LaMP_4_huffpost"])
def test_history_bm25_equals_reference_on_real_lamp_dev(folder):
    from conftest import shared_data

    from personarag.evaluation.lamp import load_lamp

    path = shared_data("lamp", folder, "dev_questions.json")
    queries = load_lamp(folder[:6], path).queries[::5]
    rankings = HistoryRetriever("bm25").retrieve(queries, k=5)
    for query, ranking in zip(queries, rankings):
        assert ranking.ids == reference_top_k(query.user, query.text, 5)[0], query.id
