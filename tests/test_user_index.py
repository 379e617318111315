"""The user index: upsert / remove by user id against a fresh build, save/load, exclusion of the
asking user and of users not shared, and bad input. Small sizes; speed lives in benchmarks/."""

from __future__ import annotations

import json

import numpy as np
import pytest

from personarag import InputError
from personarag.personal.user_index import AUTO_LARGE, UserIndex, user_key

pytest.importorskip("faiss")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def clustered(n: int, dim: int = 32, clusters: int = 20, seed: int = 0, noise: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim)).astype(np.float32)
    x = centers[rng.integers(clusters, size=n)] + noise * rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ids_of(rows):
    return [[u for u, _ in row] for row in rows]


def recall(found, exact) -> float:
    return float(np.mean([len(set(ids_of([f])[0]) & set(ids_of([e])[0])) / max(1, len(e)) for f, e in zip(found, exact)]))


def changed_state(kind: str, n: int = 3000, **options):
    """An index built on n users, then 10% replaced, 5% removed and 5% new users upserted;
    returns (index, final ids, final vectors)."""
    rng = np.random.default_rng(1)
    vectors = clustered(n + n // 20)
    ids = [f"u{i}" for i in range(n + n // 20)]
    index = UserIndex(kind, **options).build(ids[:n], vectors[:n])
    final = dict(zip(ids[:n], vectors[:n]))
    replaced = rng.choice(n, size=n // 10, replace=False)
    new_vectors = clustered(len(replaced), seed=7)
    index.upsert([ids[i] for i in replaced], new_vectors)
    final.update(zip((ids[i] for i in replaced), new_vectors))
    removed = [ids[i] for i in rng.choice(np.setdiff1d(np.arange(n), replaced), size=n // 20, replace=False)]
    index.remove(removed)
    for user_id in removed:
        del final[user_id]
    index.upsert(ids[n:], vectors[n:])
    final.update(zip(ids[n:], vectors[n:]))
    return index, list(final), np.stack(list(final.values()))


def test_flat_upsert_and_remove_equal_a_fresh_build_exactly():
    index, ids, vectors = changed_state("flat")
    fresh = UserIndex("flat").build(ids, vectors)
    assert len(index) == len(fresh) == len(ids) and sorted(index.ids) == sorted(ids)
    queries, exclude = vectors[::37], ids[::37]
    got, want = index.search(queries, 10, exclude=exclude), fresh.search(queries, 10, exclude=exclude)
    assert ids_of(got) == ids_of(want)
    np.testing.assert_allclose([s for r in got for _, s in r], [s for r in want for _, s in r], rtol=1e-6)


@pytest.mark.parametrize("kind", ["ivf", "ivf-pq", "hnsw"])
def test_approximate_upsert_keeps_recall_against_exact_search_on_the_final_data(kind):
    index, ids, vectors = changed_state(kind, nlist=32, nprobe=8, rebuild_fraction=0.5)
    exact = UserIndex("flat").build(ids, vectors)
    queries, exclude = vectors[::17], ids[::17]
    want = exact.search(queries, 10, exclude=exclude)
    value = recall(index.search(queries, 10, exclude=exclude), want)
    assert value >= 0.95
    if kind == "hnsw":  # replaced and removed users stay in the graph as dead nodes until a rebuild
        assert index.dead == 300 + 150 and index.index.rows == 3000 + 300 + 150
    elif kind == "ivf-pq":  # likewise: fast-scan lists cannot remove by id
        assert index.dead == 300 + 150 and index.index.rows == 3000 + 300 + 150
        assert recall(index.search(queries, 10, exclude=exclude, params={"nprobe": 1}), want) < 0.9
    else:  # the check can fail: one probed list of 32 misses neighbours
        assert recall(index.search(queries, 10, exclude=exclude, params={"nprobe": 1}), want) < 0.9


def test_hnsw_is_rebuilt_once_dead_nodes_pass_the_fraction():
    vectors = clustered(400)
    ids = [f"u{i}" for i in range(400)]
    index = UserIndex("hnsw", rebuild_fraction=0.2).build(ids, vectors)
    index.upsert(ids[:80], clustered(80, seed=3))
    assert index.dead == 80 and index.index.rows == 480  # 80 dead of 480: under 20%
    index.remove(ids[80:100])  # 100 dead of 480: over
    assert index.dead == 0 and index.index.rows == 380 and len(index) == 380
    exact = UserIndex("flat").build(index.ids, index.vectors(index.ids))
    assert recall(index.search(vectors[100:150], 5), exact.search(vectors[100:150], 5)) >= 0.95


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivf-pq", "hnsw"])
def test_remove_makes_a_user_disappear_and_replace_moves_it(kind):
    vectors = clustered(600)
    ids = [f"u{i}" for i in range(600)]
    index = UserIndex(kind, nlist=8, nprobe=8).build(ids, vectors)
    target = "u5"
    assert index.search(vectors[5], 1)[0][0][0] == target
    index.remove([target])
    assert target not in index and len(index) == 599
    found = index.search(vectors[5], 50)[0]
    assert target not in {u for u, _ in found} and len(found) == 50
    index.upsert([target], vectors[5:6])  # back, then moved onto u300's place
    assert index.search(vectors[5], 1)[0][0][0] == target
    index.upsert([target], vectors[300:301] * 3.0)  # vectors are normalised on the way in
    top = index.search(vectors[300], 2)[0]
    assert {u for u, _ in top} == {"u300", target} and top[0][1] == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(index.vectors([target])[0], vectors[300], atol=1e-6)
    assert target not in {u for u, _ in index.search(vectors[5], 5)[0]}


def test_ivf_pq_reorders_its_candidates_exactly_and_is_rebuilt_once_dead_rows_pass_the_fraction():
    vectors = clustered(1200)
    ids = [f"u{i}" for i in range(1200)]
    index = UserIndex("ivf-pq", nlist=16, pq_nprobe=16, rebuild_fraction=0.2).build(ids, vectors)
    assert index.built_kind == "ivf-pq"
    exact = UserIndex("flat").build(ids, vectors)
    found, want = index.search(vectors[:40], 10, exclude=ids[:40]), exact.search(vectors[:40], 10, exclude=ids[:40])
    # every list probed: the codes only pick candidates, the scores and their order are exact
    assert ids_of(found) == ids_of(want)
    np.testing.assert_allclose([s for r in found for _, s in r], [s for r in want for _, s in r], atol=1e-5)
    index.upsert(ids[:200], clustered(200, seed=3))
    assert index.dead == 200 and index.index.rows == 1400  # 200 dead of 1,400: under 20%
    index.remove(ids[200:300])  # 300 of 1,400: over, so rebuilt
    assert index.dead == 0 and index.index.rows == 1100 and len(index) == 1100
    small = UserIndex("ivf-pq").build(ids[:100], vectors[:100])
    assert small.built_kind == "flat"  # too few users to train 4-bit codebooks


def test_auto_is_exact_when_small_and_approximate_when_it_grows():
    vectors = clustered(2500)
    ids = [f"u{i}" for i in range(2500)]
    index = UserIndex(exact_below=1000).build(ids[:500], vectors[:500])
    assert index.built_kind == "flat"
    index.upsert(ids[500:], vectors[500:])
    assert index.built_kind == AUTO_LARGE and len(index) == 2500
    index.remove(ids[:1100])  # 1,400 left: still above half the line, stays approximate
    assert index.built_kind == AUTO_LARGE
    index.remove(ids[1100:2100])  # 400 left: back to exact
    assert index.built_kind == "flat" and sorted(index.ids) == sorted(ids[2100:])
    exact = UserIndex("flat").build(ids[2100:], vectors[2100:])
    assert index.search(vectors[2100:2110], 5) == exact.search(vectors[2100:2110], 5)


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivf-pq", "hnsw"])
def test_a_loaded_index_answers_exactly_as_before_saving(kind, tmp_path):
    index, ids, vectors = changed_state(kind, n=1500, nlist=16, nprobe=4, rebuild_fraction=0.9)
    before = index.search(vectors[::11], 10, exclude=ids[::11], hide=ids[:40])
    index.save(tmp_path / "users")
    loaded = UserIndex.load(tmp_path / "users")
    assert loaded.built_kind == kind and sorted(loaded.ids) == sorted(ids) and loaded.dead == index.dead
    assert loaded.search(vectors[::11], 10, exclude=ids[::11], hide=ids[:40]) == before
    loaded.upsert(["new"], vectors[:1])  # keeps working after load
    assert loaded.search(vectors[0], 1, exclude=[ids[0]])[0][0][0] == "new"
    if kind == "ivf":
        assert UserIndex.load(tmp_path / "users", nprobe=1).options["nprobe"] == 1
    import json

    config = json.loads((tmp_path / "users" / "config.json").read_text())
    assert config["users"] == len(ids) and set(config["versions"]) == {"faiss", "numpy", "personarag"}


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivf-pq", "hnsw"])
def test_a_saved_index_whose_user_list_does_not_match_is_a_clear_error(kind, tmp_path):
    index, ids, vectors = changed_state(kind, n=1500, nlist=16, nprobe=4, rebuild_fraction=0.9)
    index.save(tmp_path / "users")
    names = json.loads((tmp_path / "users" / "users.json").read_text())
    (tmp_path / "users" / "users.json").write_text(json.dumps(names[:-1]))  # one user lost
    with pytest.raises(InputError, match=r"is inconsistent: config says \d+ users, users.json has \d+, the FAISS index \d+ rows"):
        UserIndex.load(tmp_path / "users")


def test_save_and_load_of_an_empty_index_and_a_missing_one(tmp_path):
    UserIndex("ivf").save(tmp_path / "empty")
    loaded = UserIndex.load(tmp_path / "empty")
    assert len(loaded) == 0 and loaded.kind == "ivf" and loaded.search(np.ones((2, 4)), 3) == [[], []]
    with pytest.raises(InputError, match="no saved user index"):
        UserIndex.load(tmp_path / "nothing")


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivf-pq", "hnsw"])
def test_the_asking_user_and_hidden_users_never_come_back(kind):
    vectors = clustered(800, clusters=4)
    ids = [f"u{i}" for i in range(800)]
    index = UserIndex(kind, nlist=8, nprobe=8).build(ids, vectors)
    private = set(ids[::3])
    found = index.search(vectors[:30], 10, exclude=ids[:30], hide=private)
    for row, asking in zip(found, ids[:30]):
        assert len(row) == 10 and asking not in {u for u, _ in row} and not private & {u for u, _ in row}
    exact = UserIndex("flat").build([i for i in ids if i not in private], vectors[[i % 3 != 0 for i in range(800)]])
    assert recall(found, exact.search(vectors[:30], 10, exclude=ids[:30])) >= 0.95
    several = index.search(vectors[:2], 5, exclude=[{ids[0], ids[1]}, None])
    assert not {ids[0], ids[1]} & {u for u, _ in several[0]} and several[1][0][0] == ids[1]


def test_upsert_with_shared_flags_indexes_only_shareable_users():
    vectors = clustered(50)
    ids = [f"u{i}" for i in range(50)]
    index = UserIndex("flat").upsert(ids, vectors, shared=[i % 2 == 0 for i in range(50)])
    assert sorted(index.ids) == sorted(ids[::2])
    index.upsert(ids[:4], vectors[:4], shared=[False, True, True, True])  # u0 stops sharing
    assert "u0" not in index and "u1" in index and len(index) == 26
    assert all(u not in {"u0"} | set(ids[5::2]) for row in index.search(vectors, 49) for u, _ in row)


def test_bad_input_is_a_clear_error():
    vectors = clustered(20)
    ids = [f"u{i}" for i in range(20)]
    index = UserIndex("flat").build(ids, vectors)
    with pytest.raises(InputError, match="dimension 16, the user index has 32"):
        index.upsert(["x"], np.ones((1, 16)))
    with pytest.raises(InputError, match="dimension 16, the user index has 32"):
        index.search(np.ones((1, 16)), 3)
    with pytest.raises(InputError, match="'u1' appears twice"):
        index.upsert(["u1", "u1"], vectors[:2])
    with pytest.raises(InputError, match="distinct"):
        UserIndex().build(["a", "a"], vectors[:2])
    with pytest.raises(InputError, match="one embedding per user id"):
        index.upsert(["a", "b"], vectors[:3])
    with pytest.raises(InputError, match="finite"):
        index.upsert(["a"], np.full((1, 32), np.nan))
    with pytest.raises(InputError, match="'ghost' is not in the user index"):
        index.remove(["u2", "ghost"])
    assert "u2" in index and len(index) == 20  # a failed call changes nothing
    index.remove(["u2", "ghost"], missing="ignore")
    assert "u2" not in index and len(index) == 19
    with pytest.raises(InputError, match="non-empty strings"):
        index.upsert([3], vectors[:1])
    with pytest.raises(InputError, match="kind must be one of"):
        UserIndex("annoy")
    with pytest.raises(InputError, match="hide takes user ids"):
        index.search(vectors[:1], 3, hide=[7])
    assert "u3" not in {u for u, _ in index.search(vectors[3], 5, hide="u3")[0]}  # one id is one id
    with pytest.raises(InputError, match="exclude needs one entry per query"):
        index.search(vectors[:2], 3, exclude=["u0"])
    assert user_key("u1") == 6154817874995026322 and user_key("alice") == 709973135221123661  # the same in every run


def test_save_into_a_file_path_is_refused(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(InputError, match="is a file"):
        UserIndex("flat").build(["a"], np.ones((1, 4))).save(target)


def test_ivf_trained_on_few_users_gets_its_lists_when_it_grows():
    vectors = clustered(3000)
    ids = [f"u{i}" for i in range(3000)]
    index = UserIndex("ivf", nlist=64, nprobe=16).build(ids[:40], vectors[:40])  # too few users for 64 lists
    assert index.nlist_used == 1
    index.upsert(ids[40:], vectors[40:])
    assert index.nlist_used == 64 and len(index) == 3000
    exact = UserIndex("flat").build(ids, vectors)
    assert recall(index.search(vectors[:100], 10, exclude=ids[:100]), exact.search(vectors[:100], 10, exclude=ids[:100])) >= 0.95
