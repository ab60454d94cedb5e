"""Subjects: the gallery counts people, not photos, on every backend, kept by every write (also
from several processes at once) and equal to a count from scratch; a database from before
subjects is counted by its migration."""

from __future__ import annotations

import base64
import os
import pickle
import subprocess
import sys
import textwrap
from collections import Counter
from typing import Any

import numpy as np
import pytest

from facewarden.db import Database
from facewarden.gallery import NewFace
from tests.conftest import BOX, REPO, unit
from tests.test_gallery import MODEL


def recount(store: Any, collection_id: str) -> Counter[str]:
    """Each subject's faces, counted from the faces themselves."""
    with store.db.read() as tx:
        rows = tx.all(
            "SELECT COALESCE('u:' || user_id, subject), COUNT(*) FROM gallery_faces WHERE collection_id = ?"
            " GROUP BY COALESCE('u:' || user_id, subject)",
            (collection_id,),
        )
    return Counter({k: int(n) for k, n in rows})


def kept(store: Any, collection_id: str) -> Counter[str]:
    with store.db.read() as tx:
        rows = tx.all("SELECT subject, faces FROM gallery_subjects WHERE collection_id = ?", (collection_id,))
    return Counter({k: int(n) for k, n in rows})


def check(store: Any, collection_id: str) -> Counter[str]:
    """The kept counts equal a count from scratch; returns them."""
    fresh, have = recount(store, collection_id), kept(store, collection_id)
    assert have == fresh
    col = store.get_collection(collection_id)
    assert col.subject_count == len(fresh)
    assert col.active_user_count == sum(1 for k in fresh if k.startswith("u:"))
    assert col.face_count == sum(fresh.values())
    return fresh


def faces(rng: np.random.Generator, n: int, external: str | None, image: str | None = None) -> list[NewFace]:
    return [NewFace(t, BOX, 99.0, external_image_id=external, image_id=image) for t in unit(rng, n)]


def test_subjects_are_people_and_every_write_keeps_their_count(store: Any) -> None:
    rng = np.random.default_rng(1)
    store.create_collection("lib", MODEL, 128)
    # One photo each of three strangers; five photos of "ann" (one face per photo); a group photo
    # of four people indexed under one ExternalImageId; two faces with no ExternalImageId.
    for who in ("s1", "s2", "s3"):
        store.add_faces("lib", faces(rng, 1, who), MODEL)
    ann = [store.add_faces("lib", faces(rng, 1, "ann", f"img-ann-{i}"), MODEL)[0] for i in range(5)]
    group = store.add_faces("lib", faces(rng, 4, "party.jpg", "img-party"), MODEL)
    loose = store.add_faces("lib", faces(rng, 2, None), MODEL)
    counts = check(store, "lib")
    assert counts["e:ann#0"] == 5 and len(counts) == 3 + 1 + 4 + 2
    assert {f.own_subject for f in group} == {f"e:party.jpg#{k}" for k in range(4)}
    # Another photo of the party with two of them: they are among the four already counted.
    store.add_faces("lib", faces(rng, 2, "party.jpg", "img-party-2"), MODEL)
    assert len(check(store, "lib")) == 10
    # A user gathers ann's photos and one loose face: those now count as the user.
    store.create_user("lib", "ann-user")
    assert check(store, "lib").get("u:ann-user") is None  # a user without faces is nobody to match
    store.associate_faces("lib", "ann-user", [f.face_id for f in ann[:3]] + [loose[0].face_id])
    counts = check(store, "lib")
    assert counts["u:ann-user"] == 4 and counts["e:ann#0"] == 2 and f"f:{loose[0].face_id}" not in counts
    assert store.get_collection("lib").active_user_count == 1
    assert store.subject_sizes("lib", ["u:ann-user", "e:ann#0", "nobody"]) == {"u:ann-user": 4, "e:ann#0": 2}
    store.disassociate_faces("lib", "ann-user", [loose[0].face_id])
    assert check(store, "lib")[f"f:{loose[0].face_id}"] == 1
    store.delete_faces("lib", [ann[0].face_id], force=True)
    store.delete_faces("lib", [group[3].face_id, "no-such-face"])
    counts = check(store, "lib")
    assert counts["u:ann-user"] == 2 and "e:party.jpg#3" not in counts
    store.delete_user("lib", "ann-user")  # its faces stay, as ann's photos again
    counts = check(store, "lib")
    assert counts["e:ann#0"] == 4 and store.get_collection("lib").active_user_count == 0
    store.create_user("lib", "s1-user")
    s1 = [f.face_id for f in store.list_faces("lib") if f.external_image_id == "s1"]
    store.associate_faces("lib", "s1-user", s1)
    store.erase_faces("lib", user_id="s1-user")
    store.erase_faces(external_image_id="party.jpg")
    counts = check(store, "lib")
    assert not any(k.startswith(("u:s1", "e:party")) for k in counts)
    store.purge_before("lib", store.clock() + 1)
    assert check(store, "lib") == Counter() and store.get_collection("lib").subject_count == 0
    store.delete_collection("lib")
    assert kept(store, "lib") == Counter()


WRITER = textwrap.dedent(
    """
    import base64, pickle, sys, numpy as np
    from facewarden.db import Database
    from facewarden.gallery import NewFace, open_store
    settings = pickle.loads(base64.b64decode(sys.argv[1]))  # the Settings object, handed over
    n, seed = int(sys.argv[2]), int(sys.argv[3])
    store = open_store(Database(settings.database_url), settings)
    rng = np.random.default_rng(seed)
    box = {"Width": 0.2, "Height": 0.2, "Left": 0.1, "Top": 0.1}
    store.create_user("busy", f"u{seed}")
    mine = []
    for i in range(n):
        t = rng.normal(size=(2, 128)).astype(np.float32)
        t /= np.linalg.norm(t, axis=1, keepdims=True)
        who = f"p{int(rng.integers(6))}"  # six people, shared by every writer
        new = store.add_faces("busy", [NewFace(x, box, 99.0, external_image_id=who) for x in t], "MODEL")
        mine += [f.face_id for f in new]
        step = i % 4
        if step == 1:
            store.associate_faces("busy", f"u{seed}", mine[-3:])
        elif step == 2:
            store.disassociate_faces("busy", f"u{seed}", mine[-3:-2])
        elif step == 3:
            store.delete_faces("busy", [mine.pop(0)], force=True)
    """
).replace("MODEL", MODEL)


@pytest.mark.parametrize(
    "gallery_settings", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_subject_counts_hold_under_writers_in_several_processes(service: Any, store: Any) -> None:
    """Four processes add, associate, disassociate and delete faces of six shared people at once:
    the kept counts equal a count from scratch afterwards."""
    store.create_collection("busy", MODEL, 128)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    settings = base64.b64encode(pickle.dumps(service.settings)).decode()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, settings, "24", str(seed)], env=env, stderr=subprocess.PIPE
        )
        for seed in range(4)
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-2000:]
    counts = check(store, "busy")
    assert sum(counts.values()) == 4 * 24 * 2 - 4 * 6  # each wrote 48 faces and deleted 6
    assert sum(1 for k in counts if k.startswith("u:")) == store.get_collection("busy").active_user_count


def test_a_gallery_from_before_subjects_is_counted_by_its_migration(tmp_path: Any) -> None:
    """Faces stored before subjects existed: migration 2 gives each its subject and counts them."""
    from facewarden.config import Settings
    from facewarden.gallery import open_store
    from facewarden.gallery.sql import SCHEMA

    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    db = Database(url)
    db.migrate("gallery", [SCHEMA])
    rows = [  # (face_id, ExternalImageId, image, user)
        ("a", "ann", "i1", None), ("b", "ann", "i2", None), ("c", "party", "i3", None),
        ("d", "party", "i3", None), ("e", None, "i4", None), ("f", "bob", "i5", "bob-user"),
        ("g", "bob", "i6", "bob-user"),
    ]  # fmt: skip
    with db.transaction() as tx:
        tx.execute(
            "INSERT INTO gallery_collections (collection_id, arn, model_version, dim, created_at, uid,"
            " face_count) VALUES ('old', 'arn', ?, 128, 0, 'uid', ?)",
            (MODEL, len(rows)),
        )
        tx.execute(
            "INSERT INTO gallery_users (collection_id, user_id, status, created_at) VALUES ('old', 'bob-user',"
            " 'ACTIVE', 0)"
        )
        for fid, ext, img, user in rows:
            tx.execute(
                "INSERT INTO gallery_faces (face_id, collection_id, external_image_id, image_id, bbox,"
                " confidence, template, dim, model_version, user_id, indexed_at)"
                " VALUES (?, 'old', ?, ?, '{}', 99, ?, 128, ?, ?, 0)",
                (fid, ext, img, np.zeros(128, "<f4").tobytes(), MODEL, user),
            )
    db.close()
    store = open_store(Database(url), Settings(data_dir=tmp_path, database_url=url))
    counts = check(store, "old")
    assert counts == Counter({"e:ann#0": 2, "e:party#0": 1, "e:party#1": 1, "f:e": 1, "u:bob-user": 2})
    assert store.get_collection("old").active_user_count == 1
    store.close()
