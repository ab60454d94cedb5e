"""Bulk indexing (resumable, on worker processes) and grouping faces by person."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facewarden.gallery.cluster import cluster_faces
from facewarden.service.bulk import (
    cluster_paths,
    external_id_for,
    index_paths,
    iter_images,
)
from tests.conftest import identity_photos
from tests.test_gallery import call


@pytest.fixture
def sqlite_service(tmp_path: Path, engine_cache: Any) -> Any:
    from facewarden.config import Settings
    from tests.conftest import make_service

    url = f"sqlite:///{tmp_path / 'g.sqlite3'}"
    svc = make_service(Settings(data_dir=tmp_path / "data", database_url=url), engine_cache)
    yield svc
    svc.close()


def test_index_paths_is_resumable(sqlite_service: Any, faces_dir: Path, photo_templates: Any) -> None:
    service = sqlite_service
    call(service, "CreateCollection", CollectionId="album")
    folders = [faces_dir / "barack_obama", faces_dir / "joe_biden"]
    files = iter_images(folders)
    assert len(files) == 6
    first = index_paths(
        service,
        folders,
        "album",
        external_id_from="folder",
        workers=1,
        progress=False,
        principal=service.test_principal,
    )
    assert first["images"] == 6 and first["indexed_images"] == 6 and first["errors"] == []
    assert first["faces_indexed"] >= 6
    faces = call(service, "ListFaces", CollectionId="album")["Faces"]
    assert Counter(f["ExternalImageId"] for f in faces).keys() == {"barack_obama", "joe_biden"}
    again = index_paths(
        service, folders + [files[0]], "album", workers=1, progress=False, principal=service.test_principal
    )
    assert again["skipped_known"] == 6 and again["faces_indexed"] == 0
    assert len(call(service, "ListFaces", CollectionId="album")["Faces"]) == len(faces)
    assert external_id_for(Path("/x/My Photo (1).jpg")) == "My_Photo__1_"


@pytest.mark.slow
def test_index_paths_on_worker_processes(sqlite_service: Any, faces_dir: Path) -> None:
    service = sqlite_service
    call(service, "CreateCollection", CollectionId="workers")
    photos = sorted((faces_dir / "penny").iterdir())[:2]
    summary = index_paths(
        service, photos, "workers", workers=2, progress=False, principal=service.test_principal
    )
    assert summary["indexed_images"] == 2 and summary["errors"] == [], summary
    # the workers' templates are the ones the service computes itself
    r = call(
        service,
        "SearchFacesByImage",
        CollectionId="workers",
        Image={"Bytes": photos[0].read_bytes()},
        MaxFaces=1,
    )
    assert r["FaceMatches"][0]["Similarity"] > 99


def test_cluster_faces_groups_by_person(faces_dir: Path, photo_templates: Any, engine_cache: Any) -> None:
    names = ("angelina", "barack_obama", "deepface_person_03", "sheldon", "penny")
    paths = [p for n in names for p in identity_photos(faces_dir)[n] if p in photo_templates]
    templates = np.stack([photo_templates[p][1] for p in paths])
    groups = cluster_faces(templates, 80, engine_cache.engine.calibration)
    assert sorted(i for g in groups for i in g) == list(range(len(paths)))
    for g in groups:
        assert len({paths[i].parent.name for i in g}) == 1, [paths[i].name for i in g]
    big = [g for g in groups if len(g) >= 2]
    assert len(big) >= len(names) - 1
    assert cluster_faces(np.zeros((0, 128)), 80, engine_cache.engine.calibration) == []


def test_cluster_paths_makes_users(sqlite_service: Any, faces_dir: Path, photo_templates: Any) -> None:
    service = sqlite_service
    call(service, "CreateCollection", CollectionId="grouped")
    folders = [faces_dir / "barack_obama", faces_dir / "angelina"]
    result = cluster_paths(
        service,
        folders,
        workers=1,
        progress=False,
        principal=service.test_principal,
        collection_id="grouped",
        create_users=True,
    )
    assert result["images"] == 12
    for g in result["groups"]:
        assert len({Path(f["path"]).parent.name for f in g["faces"]}) == 1
    assert {Path(g["faces"][0]["path"]).parent.name for g in result["groups"]} == {"barack_obama", "angelina"}
    users = call(service, "ListUsers", CollectionId="grouped")["Users"]
    assert len(users) == len(result["users"]) >= 2 and all(u["UserStatus"] == "ACTIVE" for u in users)
    assert result["AppliedThreshold"]["Similarity"] >= 80
