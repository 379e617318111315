"""The collaborative retriever bound to a user store, and fitting inside the pipeline: no
per-batch fitting, results independent of batching, not-shared items kept to their owner,
store changes picked up, cached embeddings and vectors reused across runs."""

from __future__ import annotations

import numpy as np
import pytest
from test_collaborative import HashEncoder, make_users, owners

from personarag import Document, InputError, Pipeline, Query, User
from personarag.personal.collaborative import CollaborativeRetriever
from personarag.personal.store import UserStore


def queries(users: list[User]) -> list[Query]:
    words = ["guitar chord riff", "pasta sauce", "league penalty", "comet orbit", "amp tuning", "garlic dough"]
    return [Query(f"q{i}", words[i % len(words)], user=u) for i, u in enumerate(users)]


def run(pipeline: Pipeline, qs: list[Query], batch: int) -> list[tuple[tuple[str, ...], tuple[float, ...]]]:
    out = []
    for start in range(0, len(qs), batch):
        out += [(r.ids, tuple(d.score for d in r.docs)) for r in pipeline.run(qs[start:start + batch])]
    return out


def test_an_unfitted_collaborative_stage_refuses_instead_of_fitting_per_batch():
    users = make_users()
    pipeline = Pipeline([CollaborativeRetriever("hash", encoder=HashEncoder(), m=2)], k=5)
    with pytest.raises(InputError, match="fit_users.*store"):
        pipeline.run(queries(users[:2]))
    with pytest.raises(InputError, match="exactly one"):
        pipeline.fit()


@pytest.mark.parametrize("source", ["users", "store"])
def test_results_do_not_depend_on_batch_size(tmp_path, source):
    users = make_users(per_topic=4)
    qs = queries(users)
    pipeline = Pipeline([CollaborativeRetriever("hash", encoder=HashEncoder(), m=3)], k=6)
    if source == "users":
        pipeline.fit(users=users)
    else:
        with UserStore(tmp_path / "u.db") as store:
            store.add_users(users)
        pipeline.fit(store=tmp_path / "u.db")
    results = {size: run(pipeline, qs, size) for size in (1, 7, len(qs))}
    assert results[1] == results[7] == results[len(qs)]
    assert len(results[1]) == len(qs) and all(len(ids) == 6 for ids, _ in results[1])


def test_fit_reaches_a_collaborative_retriever_inside_a_fusion(tmp_path):
    users = make_users()
    part = CollaborativeRetriever("hash", encoder=HashEncoder(), m=2)
    pipeline = Pipeline([{"spec": "rrf", "params": {"retrievers": [part, "recency"]}}], k=4)
    pipeline.fit(users=users)
    assert len(pipeline.run(queries(users[:1]))[0].docs) == 4


def test_store_bound_retriever_matches_the_in_memory_one_and_follows_changes(tmp_path):
    users = make_users()
    store = UserStore(tmp_path / "u.db")
    store.add_users(users + [User("empty")])
    encoder = HashEncoder()
    bound = CollaborativeRetriever("hash", encoder=encoder, m=2, store=store)
    memory = CollaborativeRetriever("hash", encoder=HashEncoder(), m=2).fit_users(users)
    me = store.user(users[0].id)
    q = Query("q", "guitar strings and a pedal", user=me)
    a, b = bound.retrieve(q, k=8)[0], memory.retrieve(q, k=8)[0]
    assert a.ids == b.ids and bound.retrieve(Query("q", "galaxy", user=User("empty")), k=3)[0].docs
    np.testing.assert_allclose([d.score for d in a.docs], [d.score for d in b.docs], atol=1e-5)
    # a newcomer added to the store afterwards is found without refitting
    store.add_users([User("fan", tuple(Document(f"fan-{i}", d.text) for i, d in enumerate(me.history)))])  # a twin
    again = bound.retrieve(q, k=100)[0]
    assert again.trace[-1].info["similar_users"][0][0] == "fan"
    assert "fan-1" in again.ids
    # a deleted user disappears
    store.delete_user("fan")
    assert "fan-1" not in bound.retrieve(q, k=100)[0].ids
    # the query's user is taken from the store, so an item added there is its own at once
    store.add_items(me.id, [Document("mine", "guitar strings and a pedal board")])
    fresh = bound.retrieve(Query("q", "guitar strings and a pedal", user=User(me.id)), k=3)[0]
    assert fresh.ids[0] == "mine" and owners(fresh)[0] == me.id


def test_items_not_shared_never_reach_another_users_candidates(tmp_path):
    users = make_users()
    secret = Document("secret", "guitar strings chord amp pedal fret", meta={"shared": False})
    owner = User(users[1].id, users[1].history + (secret,))
    pool = [owner if u.id == owner.id else u for u in users]
    store = UserStore(tmp_path / "u.db")
    store.add_users(pool)
    only_private = User("hermit", (Document("h1", "guitar strings chord amp pedal fret tuning", meta={"shared": False}),))
    store.add_users([only_private])
    for retriever in (CollaborativeRetriever("hash", encoder=HashEncoder(), m=11).fit_users(pool + [only_private]),
                      CollaborativeRetriever("hash", encoder=HashEncoder(), m=11, store=store)):
        other = retriever.retrieve(Query("q", "guitar strings chord amp", user=users[0]), k=100)[0]
        similar = [uid for uid, _ in other.trace[-1].info["similar_users"]]
        assert owner.id in similar and "hermit" not in similar
        assert "secret" not in other.ids and "h1" not in other.ids
        mine = retriever.retrieve(Query("q", "guitar strings chord amp", user=store.user(owner.id)), k=100)[0]
        assert "secret" in mine.ids
    # a whole user marked not shared in the store leaves the bound retriever's results at once
    store.set_user_shared(owner.id, False)
    other = retriever.retrieve(Query("q", "guitar strings chord amp", user=users[0]), k=100)[0]
    assert owner.id not in [uid for uid, _ in other.trace[-1].info["similar_users"]]
    assert not set(other.ids) & {d.id for d in owner.history}


def test_a_second_run_over_a_store_encodes_no_item(tmp_path):
    users = make_users()
    path = tmp_path / "u.db"
    with UserStore(path) as store:
        store.add_users(users)
    first = HashEncoder()
    CollaborativeRetriever("hash", encoder=first, m=2, store=path).retrieve(queries(users[:1]), k=3)
    assert first.texts_encoded == sum(len(u.history) for u in users) + 1  # items + the query
    second = HashEncoder()
    r = CollaborativeRetriever("hash", encoder=second, m=2, store=path)
    assert second.texts_encoded == 0
    r.retrieve(queries(users[:1]), k=3)
    assert second.texts_encoded == 1  # the query only
    with UserStore(path) as store:
        store.add_items(users[2].id, [Document("n1", "fresh pasta"), Document("n2", "basil sauce")])
    r.retrieve(queries(users[:1]), k=3)
    assert second.texts_encoded == 1 + 2 + 1


def test_the_store_is_named_in_the_spec_config(tmp_path, minilm_path):
    users = make_users()
    with UserStore(tmp_path / "u.db") as store:
        store.add_users(users)
    config = {"stages": [{"spec": "collaborative", "params": {"model": str(minilm_path), "m": 2, "device": "cpu",
                                                               "store": str(tmp_path / "u.db")}}], "k": 3}
    pipeline = Pipeline.from_config(config)
    assert pipeline.config()["stages"][0]["params"]["store"] == str(tmp_path / "u.db")
    assert len(pipeline.run(queries(users[:2]))[1].docs) == 3


@pytest.mark.slow
def test_store_bound_pipeline_with_minilm(tmp_path, minilm_path):
    users = make_users()
    with UserStore(tmp_path / "u.db") as store:
        store.add_users(users)
    pipeline = Pipeline([f"collaborative:{minilm_path}"], k=4).fit(store=tmp_path / "u.db")
    ranking = pipeline.run([Query("q", "a new guitar amp and strings", user=users[0])])[0]
    assert len(ranking.docs) == 4 and all(o.startswith("guitar") for o in owners(ranking))
