"""Fast warm collaborative retrieval and private items: bm25 relevance encodes no query, the
query-vector cache, and not-shared items kept out of the vector other users' search compares
against (in memory, bound to a store, and through incremental running sums)."""

from __future__ import annotations

import numpy as np
import pytest
from test_collaborative import TOPICS, HashEncoder, make_users, owners

from personarag import Document, InputError, Query, User
from personarag.personal.collaborative import CollaborativeRetriever, unit_range
from personarag.personal.item_embeddings import ItemEmbeddings, UserVectors, load_item_encoder
from personarag.personal.store import UserStore
from personarag.personal.user_embeddings import profile_embedding
from personarag.retrievers.fusion import minmax

pytest.importorskip("sqlalchemy")


def similar(ranking) -> list[tuple[str, float]]:
    return [(uid, round(score, 6)) for uid, score in ranking.trace[-1].info["similar_users"]]


def stored(tmp_path, users: list[User], name: str = "u.db") -> UserStore:
    store = UserStore(tmp_path / name)
    store.add_users(users)
    return store


def test_bm25_relevance_encodes_no_query_and_finds_the_same_neighbours_as_dense(tmp_path):
    users = make_users()
    store = stored(tmp_path, users + [User("newcomer")])
    encoder = HashEncoder()
    fast = CollaborativeRetriever("hash", encoder=encoder, m=2, relevance="bm25", store=store)
    dense = CollaborativeRetriever("hash", encoder=HashEncoder(), m=2, store=store)
    asker = users[9]  # space0
    fast.retrieve(Query("warm", "orbit", user=asker), k=1)
    items = encoder.texts_encoded
    assert items == sum(len(u.history) for u in users)  # the items, once; no query
    ranking = fast.retrieve(Query("q", "comet nebula", user=asker), k=5)[0]
    assert encoder.texts_encoded == items
    assert similar(ranking) == similar(dense.retrieve(Query("q", "comet nebula", user=asker), k=5)[0])
    assert set(dict(similar(ranking))) == {"space1", "space2"}  # never the asker
    assert all(o.startswith("space") for o in owners(ranking))
    top = ranking.docs[0].doc.text.split()
    assert "comet" in top or "nebula" in top
    # relevance is BM25 min-max scaled over the candidates: the best-matching item scores 1
    cands = fast.candidates([Query("q", "comet nebula", user=asker)])[0]
    assert cands.features[:, 0].max() == 1.0 and cands.features[:, 0].min() == 0.0
    # a user without history has no stored vector: only that query is encoded (empty_history="query")
    fallback = fast.retrieve(Query("q2", "pasta garlic", user=User("newcomer")), k=3)[0]
    assert encoder.texts_encoded == items + 1
    assert all(o.startswith("cooking") for o in owners(fallback))


def test_bm25_relevance_keeps_not_shared_items_to_their_owner(tmp_path):
    users = make_users()
    secret = Document("secret", "comet nebula comet nebula", meta={"shared": False})
    owner = User("space1", users[10].history + (secret,))
    pool = [owner if u.id == owner.id else u for u in users]
    retriever = CollaborativeRetriever("hash", encoder=HashEncoder(), m=3, relevance="bm25", store=stored(tmp_path, pool))
    other = retriever.retrieve(Query("q", "comet nebula", user=users[9]), k=100)[0]
    assert "space1" in dict(similar(other)) and "secret" not in other.ids
    mine = retriever.retrieve(Query("q", "comet nebula", user=owner), k=1)[0]
    assert list(mine.ids) == ["secret"]


def test_the_query_cache_encodes_a_text_once_and_forgets_the_least_recently_used(tmp_path):
    users = make_users()
    encoder = HashEncoder()
    cached = CollaborativeRetriever("hash", encoder=encoder, m=2, query_cache=2).fit_users(users)
    plain = CollaborativeRetriever("hash", encoder=HashEncoder(), m=2).fit_users(users)
    base = encoder.texts_encoded
    texts = ["guitar riff", "pasta sauce", "guitar riff", "comet orbit", "pasta sauce", "guitar riff"]
    for i, text in enumerate(texts):
        q = Query(f"q{i}", text, user=users[i])
        a, b = cached.retrieve(q, k=4)[0], plain.retrieve(q, k=4)[0]
        assert a.ids == b.ids
        np.testing.assert_allclose([d.score for d in a.docs], [d.score for d in b.docs], atol=1e-6)
    # encoded: guitar, pasta, (guitar: a hit), comet (evicts pasta), pasta (evicts guitar), guitar
    assert encoder.texts_encoded - base == 5
    batch = [Query("a", "same words", user=users[0]), Query("b", "same words", user=users[1])]
    cached.retrieve(batch, k=2)
    assert encoder.texts_encoded - base == 6
    with pytest.raises(InputError, match="query_cache"):
        CollaborativeRetriever("hash", encoder=HashEncoder(), query_cache=-1)


def _with_private(users: list[User], owner_id: str, words: str, n: int = 8) -> list[User]:
    out = []
    for user in users:
        if user.id == owner_id:
            extra = tuple(Document(f"p{i}", words, meta={"shared": False}) for i in range(n))
            user = User(user.id, user.history + extra)
        out.append(user)
    return out


@pytest.mark.parametrize("source", ["users", "store"])
def test_a_private_items_text_cannot_change_who_another_user_finds(tmp_path, source):
    users = make_users()
    asker = users[9]  # space0; space1 and space2 are its natural neighbours
    found = {}
    pools = {"space": _with_private(users, "guitar1", TOPICS["space"]),  # eight private items like the asker's
             "cooking": _with_private(users, "guitar1", TOPICS["cooking"]), "none": users}
    for name, pool in pools.items():
        retriever = CollaborativeRetriever("hash", encoder=HashEncoder(), m=3)
        if source == "users":
            retriever.fit_users(pool)
        else:
            retriever.bind_store(stored(tmp_path, pool, f"{name}.db"))
        found[name] = similar(retriever.retrieve(Query("q", "comet", user=asker), k=5)[0])
        if name != "none":  # the owner's own queries still use all of their items
            mine = retriever.retrieve(Query("q", "telescope galaxy", user=retriever._pool["guitar1"]), k=1)[0]
            assert mine.ids[0].startswith("p")
    assert found["space"] == found["cooking"] == found["none"]
    assert {uid for uid, _ in found["space"][:2]} == {"space1", "space2"} and found["space"][2][1] < 0.2


def test_turning_an_item_private_in_the_store_moves_the_owner_in_others_search(tmp_path):
    users = _with_private(make_users(), "guitar1", TOPICS["space"])
    shared_again = [Document(d.id, d.text, meta={}) for d in users[1].history if d.id.startswith("p")]
    store = stored(tmp_path, users)
    retriever = CollaborativeRetriever("hash", encoder=HashEncoder(), m=3, store=store)
    asker = make_users()[9]
    assert "guitar1" not in dict(similar(retriever.retrieve(Query("q", "comet", user=asker), k=5)[0]))
    store.add_items("guitar1", shared_again)  # same texts, now shared: the bound retriever follows
    assert "guitar1" in dict(similar(retriever.retrieve(Query("q", "comet", user=asker), k=5)[0]))


def test_shared_only_running_sums_follow_flag_changes_without_recomputing(tmp_path):
    users = make_users()
    store = stored(tmp_path, users)
    items = ItemEmbeddings(store, load_item_encoder("hash", encoder=HashEncoder()))
    public, whole = UserVectors(store, items, shared_only=True), UserVectors(store, items)
    assert public.kind != whole.kind and public.kind.startswith("shared|")
    public.get(["guitar0"]), whole.get(["guitar0"])
    history = store.user("guitar0").history

    def expect(vectors: UserVectors, keep) -> np.ndarray:
        user = store.user("guitar0")
        docs = tuple(d for d in user.history if keep(d))
        return profile_embedding(items.embed(docs), docs)

    def is_shared(d: Document) -> bool:
        return d.meta.get("shared", True) is not False

    private = Document(history[0].id, history[0].text, meta={**history[0].meta, "shared": False})
    public.add_items("guitar0", [private])
    np.testing.assert_allclose(public.get(["guitar0"])["guitar0"], expect(public, is_shared), atol=1e-6)
    np.testing.assert_allclose(whole.get(["guitar0"])["guitar0"], expect(whole, lambda d: True), atol=1e-6)
    public.add_items("guitar0", [Document("new", "comet orbit", meta={"shared": False})])  # private: no change
    public.add_items("guitar0", [history[0]])  # shared again
    np.testing.assert_allclose(public.get(["guitar0"])["guitar0"], expect(public, is_shared), atol=1e-6)
    public.delete_item("guitar0", "new")  # a private item leaves the shared sum alone
    public.delete_item("guitar0", history[1].id)
    np.testing.assert_allclose(public.get(["guitar0"])["guitar0"], expect(public, is_shared), atol=1e-6)
    assert public.recomputed == 1  # the first get only: every change was a running-sum update
    row = store.get_user_vectors(public.kind, ["guitar0"])["guitar0"]
    assert row.count == len(history) - 1 and row.history_version == store.history_version("guitar0")


@pytest.mark.parametrize("scores", [[3.0, 1.0, 2.0, 1.0], [2.0, 2.0], [0.5], [], [1.0, float("nan"), 4.0, float("inf")],
                                    [float("nan")]])
def test_unit_range_follows_the_toolkits_minmax(scores):
    assert unit_range(np.asarray(scores)).tolist() == pytest.approx(minmax(scores))
