"""The Store contract: every method of :class:`facewarden.gallery.Store`, against every backend.

Each test runs on SQLite, on PostgreSQL searched with HNSW and on PostgreSQL searched through the
in-process index (``tests.conftest.BACKENDS``), with the thresholds set low (64 faces) so that
searches run on both sides of them: exact below, the approximate index (FAISS IVF, pgvector's
HNSW) above. A new backend registers a URL scheme and joins ``BACKENDS``; the first test fails
until it does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from facewarden import errors
from facewarden.config import Settings
from facewarden.db import Database
from facewarden.gallery import NewFace, Store, backend_schemes, open_store
from tests.conftest import BACKENDS, BOX, backend_params, backend_settings, near, new_faces, unit

MODEL = "dlib-resnet-v1"
OTHER = "00000000-0000-4000-8000-000000000000"
#: URL schemes that name another scheme's backend.
ALIASES = {"postgres": "postgresql"}


@pytest.fixture(params=backend_params())
def contract_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    return backend_settings(
        request, tmp_path, request.param, gallery_ann_threshold=64, gallery_pg_ann_threshold=64
    )


def opened(settings: Settings) -> Store:
    return open_store(Database(settings.database_url), settings)


@pytest.fixture
def store(contract_settings: Settings) -> Iterator[Store]:
    s = opened(contract_settings)
    yield s
    s.close()
    s.db.close()


def brute_force(templates: np.ndarray, probe: np.ndarray, k: int) -> list[int]:
    return list(np.argsort(-(templates @ probe), kind="stable")[:k])


# ---- the backends under contract -----------------------------------------------------------------
def test_every_registered_scheme_is_under_contract() -> None:
    schemes = {"sqlite" if name == "sqlite" else "postgresql" for name in BACKENDS}
    assert {ALIASES.get(s, s) for s in backend_schemes()} == schemes


def test_unknown_scheme_is_refused(tmp_path: Path) -> None:
    class Mysql(Database):
        def __init__(self) -> None:
            self.url = "mysql://db/x"

    with pytest.raises(errors.StorageError, match="mysql"):
        open_store(Mysql(), Settings(data_dir=tmp_path))


def test_alias_scheme_opens_the_same_backend(store: Store, contract_settings: Settings) -> None:
    url = contract_settings.database_url
    aliases = [(a, s) for a, s in ALIASES.items() if url.startswith(s + "://")]
    if not aliases:
        pytest.skip("this backend's scheme has no alias")
    for alias, scheme in aliases:
        again = opened(contract_settings.replace(database_url=alias + url[len(scheme) :]))
        assert type(again) is type(store)
        assert again.list_collections() == store.list_collections()
        again.close()
        again.db.close()


# ---- collections ---------------------------------------------------------------------------------
def test_collections(store: Store) -> None:
    col = store.create_collection(
        "c1", MODEL, 128, consent_mode="household", retention_days=30, owner_org="o"
    )
    assert (col.collection_id, col.model_version, col.dim, col.consent_mode) == (
        "c1",
        MODEL,
        128,
        "household",
    )
    assert (col.retention_days, col.owner_org, col.generation, col.face_count) == (30, "o", 0, 0)
    assert col.arn.endswith("collection/c1") and col.uid
    assert store.get_collection("c1") == col
    with pytest.raises(errors.ResourceAlreadyExists):
        store.create_collection("c1", MODEL, 128)
    with pytest.raises(errors.ResourceNotFound):
        store.get_collection("nope")
    with pytest.raises(errors.ResourceNotFound):
        store.delete_collection("nope")
    for i in range(5):
        store.create_collection(f"c{i + 2}", MODEL, 128)
    seen, after = [], None
    while page := store.list_collections(after, limit=2):
        assert len(page) <= 2
        seen += [c.collection_id for c in page]
        after = page[-1].collection_id
    assert seen == [f"c{i}" for i in range(1, 7)]
    store.add_faces("c1", new_faces(unit(np.random.default_rng(0), 3)), MODEL)
    store.create_user("c1", "u")
    store.delete_collection("c1")
    with pytest.raises(errors.ResourceNotFound):
        store.get_collection("c1")
    again = store.create_collection("c1", MODEL, 128)
    assert again.uid != col.uid and again.face_count == 0
    assert store.list_faces("c1") == [] and store.list_users("c1") == [] and store.count_users("c1") == 0


# ---- faces ---------------------------------------------------------------------------------------
def test_add_get_list_and_count_faces(store: Store) -> None:
    rng = np.random.default_rng(1)
    store.create_collection("f", MODEL, 128)
    t = unit(rng, 5)
    faces = [
        NewFace(t[i], BOX, 90.0 + i, external_image_id=f"e{i % 2}", image_sha256="sha-a") for i in range(5)
    ]
    stored = store.add_faces("f", faces, MODEL)
    assert [f.external_image_id for f in stored] == ["e0", "e1", "e0", "e1", "e0"]
    assert len({f.face_id for f in stored}) == 5 and len({f.seq for f in stored}) == 5
    assert len({f.image_id for f in stored}) == 1  # the faces of one call share an image id
    assert all(f.bbox == BOX and f.model_version == MODEL and f.user_id is None for f in stored)
    assert [f.confidence for f in stored] == [90.0, 91.0, 92.0, 93.0, 94.0]
    assert store.get_collection("f").face_count == store.count_faces("f") == 5
    assert store.get_faces("f", [stored[0].face_id, OTHER]) == {stored[0].face_id: stored[0]}
    back = store.templates("f", [f.face_id for f in stored])
    for f, tmpl in zip(stored, t):
        np.testing.assert_allclose(back[f.face_id], tmpl, rtol=0, atol=1e-7)
    chosen = store.add_faces("f", [NewFace(t[0], BOX, 99.0, face_id=OTHER, image_id="img")], MODEL)
    assert (chosen[0].face_id, chosen[0].image_id) == (OTHER, "img")
    assert store.add_faces("f", [], MODEL) == []
    with pytest.raises(errors.ModelMismatch):
        store.add_faces("f", new_faces(t[:1]), "another-model")
    with pytest.raises(errors.ModelMismatch):
        store.add_faces("f", new_faces(unit(rng, 1, dim=64)), MODEL)
    with pytest.raises(errors.ResourceNotFound):
        store.add_faces("nope", new_faces(t[:1]), MODEL)
    assert store.count_faces("f") == 6


def test_list_faces_pages_and_filters(store: Store) -> None:
    store.create_collection("p", MODEL, 128)
    ids = {f.face_id for f in store.add_faces("p", new_faces(unit(np.random.default_rng(2), 23)), MODEL)}
    for size in (1, 5, 100):
        seen, after = [], None
        while page := store.list_faces("p", after, limit=size):
            assert len(page) <= size
            seen += [f.face_id for f in page]
            after = page[-1].face_id
        assert seen == sorted(ids)
    some = sorted(ids)[3:8]
    assert [f.face_id for f in store.list_faces("p", face_ids=some)] == some
    assert store.list_faces("p", face_ids=[]) == []
    store.create_user("p", "u")
    store.associate_faces("p", "u", some[:2])
    assert [f.face_id for f in store.list_faces("p", user_id="u")] == some[:2]
    with pytest.raises(errors.ResourceNotFound):
        store.list_faces("nope")


def test_skip_known_image_and_has_image(store: Store) -> None:
    store.create_collection("k", MODEL, 128)
    t = unit(np.random.default_rng(3), 3)
    assert not store.has_image("k", "sha-1")
    first = store.add_faces("k", new_faces(t[:2], sha="sha-1"), MODEL, skip_known_image=True)
    assert len(first) == 2 and store.has_image("k", "sha-1")
    assert store.add_faces("k", new_faces(t[2:], sha="sha-1"), MODEL, skip_known_image=True) == []
    assert len(store.add_faces("k", new_faces(t[2:], sha="sha-1"), MODEL)) == 1  # unless asked
    store.create_collection("k2", MODEL, 128)
    assert not store.has_image("k2", "sha-1")
    assert store.count_faces("k") == 3


def test_delete_faces(store: Store) -> None:
    store.create_collection("d", MODEL, 128)
    stored = store.add_faces("d", new_faces(unit(np.random.default_rng(4), 4)), MODEL)
    ids = [f.face_id for f in stored]
    store.create_user("d", "u")
    store.associate_faces("d", "u", ids[:1])
    generation = store.get_collection("d").generation
    deleted, failed = store.delete_faces("d", [ids[0], ids[1], OTHER])
    assert deleted == [ids[1]]
    assert failed == {ids[0]: ("ASSOCIATED_TO_AN_EXISTING_USER", "u"), OTHER: ("FACE_NOT_FOUND", None)}
    assert store.get_collection("d").generation > generation
    deleted, failed = store.delete_faces("d", [ids[0]], force=True)
    assert deleted == [ids[0]] and failed == {}
    assert store.get_user("d", "u").status == "CREATED"  # its only face went
    assert store.store_face_ids("d") == set(ids[2:]) == store.index_face_ids("d")
    assert store.count_faces("d") == 2


# ---- search --------------------------------------------------------------------------------------
def test_search_finds_the_nearest_below_and_above_the_thresholds(store: Store) -> None:
    """The nearest faces, best first, in a small collection (exact search) and one past the
    thresholds (the approximate index), with deletions and exclusions honoured."""
    rng = np.random.default_rng(5)
    store.create_collection("s", MODEL, 128)
    assert store.search("s", unit(rng, 1)[0], 5) == []  # empty collection
    t = np.concatenate([unit(rng, 20), near(rng, unit(rng, 1)[0], 10)])
    ids = [f.face_id for f in store.add_faces("s", new_faces(t), MODEL)]
    for size in (30, 200):
        if size > len(ids):
            more = unit(rng, size - len(ids))
            ids += [f.face_id for f in store.add_faces("s", new_faces(more), MODEL)]
            t = np.concatenate([t, more])
        for q in (0, 5, 22, 25):
            got = store.search("s", t[q], 4)
            assert [m.face.face_id for m in got] == [ids[i] for i in brute_force(t, t[q], 4)]
            inner = [m.inner for m in got]
            assert inner == sorted(inner, reverse=True) and abs(inner[0] - 1.0) < 1e-5
            assert all(m.face.collection_id == "s" for m in got)
        if size < 64:  # exact search returns everything asked for; an approximate index need not
            assert len(store.search("s", t[0], 1000)) == len(ids)
        assert store.search("s", t[0], 0) == []
        excluded = store.search("s", t[22], 3, exclude=[ids[22]])
        assert ids[22] not in [m.face.face_id for m in excluded] and len(excluded) == 3
    gone = ids[20:30]
    store.delete_faces("s", gone)
    for q in range(20, 30):
        assert not {m.face.face_id for m in store.search("s", t[q], 10)} & set(gone)
    assert store.index_face_ids("s") == set(ids) - set(gone)
    with pytest.raises(errors.ModelMismatch):
        store.search("s", unit(rng, 1, dim=64)[0], 1)
    with pytest.raises(errors.ResourceNotFound):
        store.search("nope", t[0], 1)


def test_search_sees_only_its_collection(store: Store) -> None:
    rng = np.random.default_rng(6)
    t = unit(rng, 80)
    store.create_collection("mine", MODEL, 128)
    store.create_collection("theirs", MODEL, 128)
    mine = [f.face_id for f in store.add_faces("mine", new_faces(t[:70]), MODEL)]
    store.add_faces("theirs", new_faces(t[70:]), MODEL)
    for q in range(70, 80):
        got = store.search("mine", t[q], 3)
        assert [m.face.face_id for m in got] == [mine[i] for i in brute_force(t[:70], t[q], 3)]


def test_index_upkeep_and_reopening(store: Store, contract_settings: Settings) -> None:
    """sync_index and index_face_ids follow what another store (another process) wrote; a store
    opened after ``close`` (a restarted process) finds everything."""
    rng = np.random.default_rng(7)
    store.create_collection("r", MODEL, 128)
    t = unit(rng, 100)
    ids = [f.face_id for f in store.add_faces("r", new_faces(t[:90]), MODEL)]
    store.sync_index("r")
    assert store.index_face_ids("r") == set(ids)
    other = opened(contract_settings)
    ids += [f.face_id for f in other.add_faces("r", new_faces(t[90:]), MODEL)]
    other.delete_faces("r", ids[:5])
    assert store.index_face_ids("r") == set(ids[5:]) == other.index_face_ids("r")
    assert store.search("r", t[95], 1)[0].face.face_id == ids[95]
    for s in (store, other):
        s.close()
    other.db.close()
    again = opened(contract_settings)
    assert again.index_face_ids("r") == set(ids[5:]) == again.store_face_ids("r")
    assert again.search("r", t[50], 1)[0].face.face_id == ids[50]
    again.close()
    again.db.close()
    with pytest.raises(errors.ResourceNotFound):
        store.sync_index("nope")


# ---- users ---------------------------------------------------------------------------------------
def test_users(store: Store) -> None:
    rng = np.random.default_rng(8)
    store.create_collection("u", MODEL, 128)
    ids = [f.face_id for f in store.add_faces("u", new_faces(near(rng, unit(rng, 1)[0], 6)), MODEL)]
    created = store.create_user("u", "alice")
    assert (created.user_id, created.status, created.face_count) == ("alice", "CREATED", 0)
    with pytest.raises(errors.ResourceAlreadyExists):
        store.create_user("u", "alice")
    with pytest.raises(errors.ResourceNotFound):
        store.get_user("u", "bob")
    with pytest.raises(errors.ResourceNotFound):
        store.create_user("nope", "alice")
    store.create_user("u", "bob")
    r = store.associate_faces("u", "alice", [ids[0], ids[1], OTHER])
    assert sorted(r.associated) == sorted(ids[:2]) and r.status == "ACTIVE"
    assert r.failed == {OTHER: ("FACE_NOT_FOUND", None)}
    again = store.associate_faces("u", "alice", [ids[0]])
    assert again.associated == [ids[0]] and again.failed == {}
    taken = store.associate_faces("u", "bob", [ids[0], ids[2]])
    assert taken.associated == [ids[2]] and taken.failed == {
        ids[0]: ("ASSOCIATED_TO_A_DIFFERENT_USER", "alice")
    }
    with pytest.raises(errors.ServiceQuotaExceeded):
        store.associate_faces("u", "alice", ids[3:6], limit=4)
    assert store.get_user("u", "alice").face_count == 2  # nothing of the refused call happened
    assert store.users_status("u", ["alice", "bob", "carol"]) == {"alice": "ACTIVE", "bob": "ACTIVE"}
    off = store.disassociate_faces("u", "alice", [ids[1], ids[2], OTHER])
    assert off.associated == [ids[1]] and off.status == "ACTIVE"
    assert off.failed == {ids[2]: ("ASSOCIATED_TO_A_DIFFERENT_USER", "bob"), OTHER: ("FACE_NOT_FOUND", None)}
    for i in range(7):
        store.create_user("u", f"user-{i}")
    assert store.count_users("u") == 9
    seen, after = [], None
    while page := store.list_users("u", after, limit=4):
        seen += [u.user_id for u in page]
        after = page[-1].user_id
    assert seen == ["alice", "bob", *[f"user-{i}" for i in range(7)]]
    assert store.delete_user("u", "alice") == [ids[0]]
    assert store.get_faces("u", [ids[0]])[ids[0]].user_id is None  # the face stays, unassociated
    with pytest.raises(errors.ResourceNotFound):
        store.delete_user("u", "alice")
    assert store.count_faces("u") == 6 and store.count_users("u") == 8


# ---- data protection (used by policy: erasure, retention) ---------------------------------------
def test_erase_purge_and_has_image(store: Store) -> None:
    rng = np.random.default_rng(4)
    for cid in ("a", "b"):
        store.create_collection(cid, MODEL, 128, consent_mode="household")
    t = unit(rng, 6)
    fa = store.add_faces("a", new_faces(t[:3], external="alice", sha="s1"), MODEL)
    fb = store.add_faces("b", new_faces(t[3:4], external="alice", sha="s2"), MODEL)
    fc = store.add_faces("a", new_faces(t[4:6], external="bob", sha="s3"), MODEL)
    store.create_user("a", "bob-user")
    store.associate_faces("a", "bob-user", [fc[0].face_id])
    assert store.has_image("a", "s1") and not store.has_image("a", "s2") and store.has_image("b", "s2")
    store.search("a", t[0], 1)  # index loaded: erasure must update it
    removed = store.erase_faces(external_image_id="alice")
    assert sorted(removed) == sorted(f.face_id for f in fa + fb)
    assert store.count_faces("a") == 2 and store.count_faces("b") == 0
    assert all(m.face.external_image_id == "bob" for m in store.search("a", t[0], 5))
    assert store.index_face_ids("a") == store.store_face_ids("a")
    removed = store.erase_faces("a", user_id="bob-user")
    assert removed == [fc[0].face_id] and store.count_users("a") == 0
    store.clock = lambda: 2e9  # later faces
    late = store.add_faces("a", new_faces(unit(rng, 2), external="carol"), MODEL)
    purged = store.purge_before("a", 1.9e9)
    assert purged == [fc[1].face_id]
    assert store.store_face_ids("a") == {f.face_id for f in late} == store.index_face_ids("a")
    with pytest.raises(errors.InvalidInput):
        store.erase_faces("a")


def test_erasure_and_purge_join_the_callers_transaction(store: Store) -> None:
    """With ``tx`` the erasure commits or rolls back with the caller's other writes."""
    rng = np.random.default_rng(9)
    store.create_collection("t", MODEL, 128)
    kept = store.add_faces("t", new_faces(unit(rng, 2), external="x"), MODEL)
    with pytest.raises(RuntimeError), store.db.transaction(lock="gallery:t") as tx:
        assert store.erase_faces("t", external_image_id="x", tx=tx) == [f.face_id for f in kept]
        raise RuntimeError("the caller fails after erasing")
    assert store.count_faces("t") == 2  # rolled back
    with store.db.transaction(lock="gallery:t") as tx:
        assert sorted(store.purge_before("t", 3e9, tx=tx)) == sorted(f.face_id for f in kept)
    assert store.count_faces("t") == 0 and store.search("t", unit(rng, 1)[0], 3) == []


def test_what_the_safeguards_ask_of_a_store(store: Store) -> None:
    """Consent mode changes (a household converted), a size cap checked with the insert, users that
    hold one subject's faces, deletion in the caller's transaction, erasure taking emptied users."""
    rng = np.random.default_rng(12)
    store.create_collection("c", MODEL, 128, consent_mode="household", owner_org="o")
    store.set_consent_mode("c", "required")
    assert store.get_collection("c").consent_mode == "required"
    with pytest.raises(errors.InvalidInput):
        store.set_consent_mode("c", "open")
    amy = [f.face_id for f in store.add_faces("c", new_faces(unit(rng, 2), "amy"), MODEL, max_faces=3)]
    with pytest.raises(errors.ServiceQuotaExceeded, match="limit of 3"):
        store.add_faces("c", new_faces(unit(rng, 2), "bob"), MODEL, max_faces=3)
    assert store.count_faces("c") == 2
    bob_t = unit(rng, 1)
    bob = store.add_faces("c", new_faces(bob_t, "bob"), MODEL, max_faces=3)[0].face_id
    store.create_user("c", "u")
    assert store.associate_faces("c", "u", [amy[0]], subject="amy").associated == [amy[0]]
    for face, subject in ((bob, "amy"), (amy[1], "bob")):  # another subject's face; a user of amy's
        with pytest.raises(errors.AccessDenied, match="one subject") as info:
            store.associate_faces("c", "u", [face], subject=subject)
        assert info.value.rule == "user_subject"
    assert {f.face_id for f in store.list_faces("c", user_id="u")} == {amy[0]}
    with store.db.transaction() as tx:
        deleted, failed = store.delete_faces("c", [bob, OTHER], force=True, tx=tx)
    assert deleted == [bob] and failed == {OTHER: ("FACE_NOT_FOUND", None)}
    assert bob not in {m.face.face_id for m in store.search("c", bob_t[0], 3)}
    assert store.count_faces("c") == 2
    assert sorted(store.erase_faces("c", external_image_id="amy")) == sorted(amy)
    with pytest.raises(errors.ResourceNotFound):
        store.get_user("c", "u")  # it held only amy's faces
