"""History BM25 backed by a UserStore (SQLite and PostgreSQL): the vocabulary, token bags and
per-user postings are written on first use and read back in bulk by a fresh retriever, which
then tokenizes and indexes nothing it has seen; a changed history, other parameters or another
tokenizer never re-use them; scores stay bit-exact with a rank_bm25 built per profile."""

from __future__ import annotations

from collections import Counter

import pytest

pytest.importorskip("sqlalchemy")

from personarag import Document, InputError, Pipeline, Query, User  # noqa: E402
from personarag.personal.history import HistoryRetriever  # noqa: E402
from personarag.personal.store import UserStore  # noqa: E402
from personarag.personal.stored_tokens import StoredTokens, params_key, tokenizer_fingerprint  # noqa: E402
from personarag.personal.tokens import TokenCache  # noqa: E402
from tests.test_history import QUERY_TEXTS, TEXTS, assert_scores_equal_reference, make_users, reference_top_k  # noqa: E402

SPLIT = tokenizer_fingerprint("split")
DEFAULT_PARAMS = params_key(1.5, 0.75, 0.25)


def queries_of(users: list[User]) -> list[Query]:
    return [Query(f"{u.id}-q{j}", text, u) for u in users for j, text in enumerate(QUERY_TEXTS)]


def assert_same_as_reference(retriever: HistoryRetriever, users: list[User], k: int = 3) -> None:
    queries = queries_of(users)
    for query, ranking in zip(queries, retriever.retrieve(queries, k=k)):
        assert ranking.ids == reference_top_k(query.user, query.text, k)[0], query.id
    assert_scores_equal_reference(retriever, [q.user for q in queries], [q.text for q in queries])


def test_a_fresh_retriever_on_a_warm_store_tokenizes_and_indexes_nothing(location):
    users = make_users()
    with UserStore(location) as store:
        store.add_users(users)
        first = HistoryRetriever("bm25", store=store)
        assert first.bound_to_store
        assert_same_as_reference(first, users)
        written = first.bm25.stored
        assert written.bags_saved == len(set(TEXTS) & {d.text for u in users for d in u.history})
        assert written.postings_saved == len(users) and written.postings_read == 0
    with UserStore(location) as store:  # as a new process would open it
        fresh = HistoryRetriever("bm25", store=store)
        assert_same_as_reference(fresh, users)
        stored = fresh.bm25.stored
        assert fresh.bm25.tokens.tokenized == 0
        assert stored.postings_read == len(users) and stored.bags_read == 0
        assert stored.bags_saved == 0 and stored.postings_saved == 0
        assert fresh.bm25.tokens.terms == written.cache.terms  # the store's numbering


def test_an_edited_or_deleted_item_invalidates_that_users_postings_and_orphan_bags(location):
    with UserStore(location) as store:
        store.add_users(make_users())
        users = list(store.users())  # in the store's order (newest first), as a server reads them
        assert_same_as_reference(HistoryRetriever("bm25", store=store), users)
        old_text = users[5].history[0].text
        store.add_items("u5", [Document(users[5].history[0].id, "a brand new tone from an old amp",
                                        meta=dict(users[5].history[0].meta))])
        store.delete_item("u4", users[4].history[0].id)
        _, rows = store.get_bm25_postings(SPLIT, DEFAULT_PARAMS, [u.id for u in users])
        assert set(rows) == {"u0", "u1", "u2", "u3"}  # u4 and u5 changed: their postings are gone
        holders = [d for u in users[:5] for d in u.history if d.text == old_text]
        assert bool(store.get_token_bags(SPLIT, [_hash(old_text)])) == bool(holders)
        changed = [store.user(u.id) for u in users]
        fresh = HistoryRetriever("bm25", store=store)
        assert_same_as_reference(fresh, changed)
        stored = fresh.bm25.stored
        assert stored.postings_read == 4 and stored.postings_saved == 2
        assert fresh.bm25.tokens.tokenized == 1  # only the new text; the other bags come from the store
        store.delete_user("u1")
        assert set(store.get_bm25_postings(SPLIT, DEFAULT_PARAMS, [u.id for u in users])[1]) == {"u0", "u2", "u3", "u4", "u5"}


def _hash(text: str) -> str:
    from personarag.personal.store import content_hash

    return content_hash(Document("x", text))


def test_a_query_history_unlike_the_one_indexed_is_rebuilt_not_read(location):
    users = make_users()
    with UserStore(location) as store:
        store.add_users(users)
        assert_same_as_reference(HistoryRetriever("bm25", store=store), users)
        history = users[3].history
        edited = User("u3", (history[0], Document(history[1].id, "the amp hums", meta=dict(history[1].meta)), *history[2:]))
        reordered = User("u5", users[5].history[1:] + users[5].history[:1])
        assert [d.text for d in reordered.history] != [d.text for d in users[5].history]
        asked = [users[0], edited, reordered]
        fresh = HistoryRetriever("bm25", store=store)
        assert_same_as_reference(fresh, asked)
        stored = fresh.bm25.stored
        assert stored.postings_read == 1  # u0 only: the others' digests differ from the stored ones
        assert fresh.bm25.tokens.tokenized == 1  # "the amp hums": every other text's bag is stored


def test_postings_stored_under_an_older_digest_are_rebuilt_not_read(location):
    """Stores written before the digest became xxh3 hold sha256 hex digests: never equal to a
    new digest, so those users' postings are rebuilt (and rewritten), never mis-read."""
    users = make_users()
    with UserStore(location) as store:
        store.add_users(users)
        assert_same_as_reference(HistoryRetriever("bm25", store=store), users)
        _, rows = store.get_bm25_postings(SPLIT, DEFAULT_PARAMS, ["u2"])
        _, size, records, lengths = rows["u2"]
        store.put_bm25_postings(SPLIT, DEFAULT_PARAMS, {"u2": ("0" * 64, size, records, lengths)})
        fresh = HistoryRetriever("bm25", store=store)
        assert_same_as_reference(fresh, users)
        assert fresh.bm25.stored.postings_read == len(users) - 1 and fresh.bm25.stored.postings_saved == 1
        assert store.get_bm25_postings(SPLIT, DEFAULT_PARAMS, ["u2"])[1]["u2"][0].startswith("xxh3_128:")


def test_the_history_digest_tells_where_title_and_text_split():
    from personarag.personal.stored_tokens import history_digest

    one = [Document("d1", "bc", title="a")]
    assert history_digest(one) != history_digest([Document("d1", "c", title="ab")])
    assert history_digest(one) == history_digest([Document("other-id", "bc", title="a")])  # content, not ids
    assert history_digest(one) != history_digest(one + one)


def test_other_tokenizers_and_parameters_never_read_what_split_wrote(location):
    users = make_users()
    with UserStore(location) as store:
        store.add_users(users)
        assert_same_as_reference(HistoryRetriever("bm25", store=store), users)
        words = HistoryRetriever("bm25", tokenizer="words", store=store)
        queries = queries_of(users)
        words.retrieve(queries, k=3)
        assert words.bm25.stored.fingerprint != SPLIT
        assert words.bm25.stored.bags_read == 0 and words.bm25.stored.postings_read == 0
        assert words.bm25.tokens.tokenized == words.bm25.stored.bags_saved > 0
        assert "Guitar" in store.token_terms(SPLIT) and "Guitar" not in store.token_terms(words.bm25.stored.fingerprint)
        assert "PyStemmer=" in tokenizer_fingerprint("words+english")
        other = HistoryRetriever("bm25", k1=1.2, b=0.5, store=store)
        other.retrieve(queries, k=3)
        assert other.bm25.stored.postings_read == 0 and other.bm25.tokens.tokenized == 0  # bags re-used, postings not
        again = HistoryRetriever("bm25", k1=1.2, b=0.5, store=store)
        again.retrieve(queries, k=3)
        assert again.bm25.stored.postings_read == len(users)


def test_concurrent_vocabulary_writers_end_with_one_numbering(location):
    first_texts = ["red guitar strings", "blue amp hum"]
    second_texts = ["blue guitar pedal", "green strings and a red amp", "loud drum"]
    users = [User("a", tuple(Document(f"a{i}", t) for i, t in enumerate(first_texts))),
             User("b", tuple(Document(f"b{i}", t) for i, t in enumerate(second_texts)))]
    with UserStore(location) as store:
        store.add_users(users)
        one = StoredTokens(store, TokenCache(str.split, "split"))
        two = StoredTokens(store, TokenCache(str.split, "split"))
        two.read_terms()  # the (empty) vocabulary, before one writes
        one.bags_of(users[0].history)
        two.bags_of(users[1].history)  # numbers "blue", "guitar", "red", ... as one did, appends the rest
        # two had numbered its terms from 0; it takes one's ids and puts its own new terms after them
        assert two.cache.terms == one.cache.terms + ["pedal", "green", "and", "a", "loud", "drum"]
        assert store.token_terms(SPLIT) == two.cache.terms
        three = StoredTokens(store, TokenCache(str.split, "split"))
        for stored in (two, three):
            docs = list(users[0].history + users[1].history)
            bags = stored.bags_of(docs)
            start = 0
            for doc, entries in zip(docs, bags.entries.tolist()):
                terms = [stored.cache.terms[t] for t in bags.terms[start:start + entries].tolist()]
                assert dict(zip(terms, bags.counts[start:start + entries].tolist())) == Counter(doc.text.split())
                assert terms == list(Counter(doc.text.split()))  # first occurrence first
                start += entries
        assert three.cache.tokenized == 0 and three.bags_read == 5


def test_a_schema_1_store_gains_the_token_tables_on_open(location):
    users = make_users()
    with UserStore(location) as store:
        store.add_users(users)
        with store._write() as conn:
            from sqlalchemy import text

            for table in ("pr_bm25_postings", "pr_token_bags", "pr_token_terms"):
                conn.execute(text(f"DROP TABLE {table}"))
            conn.execute(text("UPDATE pr_meta SET value = '1' WHERE key = 'schema_version'"))
    with UserStore(location) as store:
        assert [u.id for u in store.users()] == [u.id for u in users]
        assert_same_as_reference(HistoryRetriever("bm25", store=store), [store.user(u.id) for u in users])
        assert store.token_terms(SPLIT)


def test_pipeline_fit_binds_the_history_retriever_and_its_config_names_the_store(tmp_path):
    users = make_users()
    in_memory = HistoryRetriever("bm25")
    Pipeline([in_memory], k=3).fit(users=users)  # users= indexes nothing: queries bring their histories
    assert not in_memory.bound_to_store and len(in_memory.store) == 0
    with pytest.raises(InputError, match="exactly one"):
        in_memory.fit(users=users, store=tmp_path / "x.db")
    path = tmp_path / "users.db"
    with UserStore(path) as store:
        store.add_users(users)
        retriever = HistoryRetriever("bm25")
        pipeline = Pipeline([retriever], k=3).fit(store=store)
        assert retriever.bound_to_store and retriever.user_store is store
        rankings = pipeline.run(queries_of(users[2:3]))
        assert rankings[0].ids == reference_top_k(users[2], QUERY_TEXTS[0], 3)[0]
        assert retriever.bm25.stored.postings_saved == 1
        assert HistoryRetriever("bm25", store=store).config()["params"]["store"] == store.url
    with pytest.raises(InputError, match="not both"):
        HistoryRetriever("bm25", store=path, tokens=TokenCache(str.split, "split"))
    with pytest.raises(InputError, match="starts empty"):
        cache = TokenCache(str.split, "split")
        cache.bags(["some text"])
        StoredTokens(UserStore(path), cache)


@pytest.mark.slow
@pytest.mark.parametrize("folder", ["LaMP_2_movielens_tmdb", "LaMP_3_amazon_mi", "LaMP_4_huffpost", "LaMP_5_acl_anthology"])
def test_store_backed_history_bm25_equals_reference_on_real_lamp_dev(folder, tmp_path):
    from conftest import shared_data

    from personarag.evaluation.lamp import load_lamp

    path = shared_data("lamp", folder, "dev_questions.json")
    queries = load_lamp(folder[:6], path).queries[::5]
    with UserStore(tmp_path / "users.db") as store:
        store.add_users({q.user.id: q.user for q in queries}.values())
        for run in ("cold store", "warm store"):
            retriever = HistoryRetriever("bm25", store=store)
            rankings = retriever.retrieve(queries, k=5)
            for query, ranking in zip(queries, rankings):
                ids, scores = reference_top_k(query.user, query.text, 5)
                assert ranking.ids == ids, (run, query.id)
                position = {d.id: i for i, d in enumerate(query.user.history)}
                assert [s.score for s in ranking.docs] == [scores[position[i]] for i in ids], (run, query.id)
        assert retriever.bm25.tokens.tokenized == 0  # the warm run read every bag and postings
        assert retriever.bm25.stored.postings_read == len({q.user.id for q in queries})
