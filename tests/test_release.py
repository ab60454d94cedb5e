"""Footage release, the store: the request's and items' states, one download, expiry, ownership."""

from __future__ import annotations

from pathlib import Path

import pytest

from facewarden.db import Database
from facewarden.errors import InvalidInput, ReleaseStateError, ResourceNotFound
from facewarden.release import DECLINED, DOWNLOADED, EXPIRED, PENDING, READY, RELEASED, Releases


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def releases(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Releases, Clock]:
    from .conftest import fresh_pg_database

    url = (
        f"sqlite:///{tmp_path / 'r.sqlite3'}"
        if request.param == "sqlite"
        else fresh_pg_database(request.getfixturevalue("pg_url"))
    )
    clock = Clock()
    db = Database(url)
    yield Releases(db, clock), clock
    db.close()


def add(r: Releases, org: str, name: str) -> str:
    return r.add_footage(
        owner_org=org,
        name=name,
        media="image",
        path=f"{org}/{name}",
        sha256="0" * 64,
        size_bytes=10,
        added_by="k",
    ).footage_id


def ask(r: Releases, owner: str = "shop") -> str:
    return r.create(
        requester_org="police", requester_sector="law_enforcement", requester_key="kp", owner_org=owner,
        time_from=1000.0, time_to=2000.0, place="High Street", reason="burglary", legal_basis="warrant",
        reference="W-1",
    ).request_id  # fmt: skip


def test_a_request_is_released_downloaded_once_and_expires(releases: tuple[Releases, Clock]) -> None:
    r, clock = releases
    cam = add(r, "shop", "door.mp4")
    rid = ask(r)
    assert r.get(rid, "police").status == PENDING and r.get(rid, "shop").status == PENDING
    with pytest.raises(ReleaseStateError, match="not been approved"):
        r.take(rid, "itm-x", "police", "kp")
    req, pairs = r.release(rid, "shop", "ko", [cam], expires_in_days=1)
    assert req.status == RELEASED and len(pairs) == 1
    item = pairs[0][0]
    with pytest.raises(ReleaseStateError, match="still being redacted"):
        r.take(rid, item.item_id, "police", "kp")
    r.set_item(item.item_id, status=READY, copy_path="copies/x.mp4", faces_hidden=3)
    with pytest.raises(ResourceNotFound, match="only the requester downloads"):
        r.take(rid, item.item_id, "shop", "ko")
    taken = r.take(rid, item.item_id, "police", "kp")
    assert taken.copy_path == "copies/x.mp4" and taken.faces_hidden == 3
    assert r.get(rid, "police").items[0].status == DOWNLOADED
    with pytest.raises(ReleaseStateError, match="already downloaded"):
        r.take(rid, item.item_id, "police", "kp")
    with pytest.raises(ReleaseStateError, match="decided once"):
        r.decline(rid, "shop", "ko", "changed my mind")
    clock.now += 2 * 86400
    assert r.get(rid, "police").status == EXPIRED and r.requests("police")[0].status == EXPIRED
    with pytest.raises(ReleaseStateError, match="expired"):
        r.take(rid, item.item_id, "police", "kp")


def test_expiry_returns_the_copies_to_delete(releases: tuple[Releases, Clock]) -> None:
    r, clock = releases
    rid = ask(r)
    _, pairs = r.release(rid, "shop", "ko", [add(r, "shop", "a.jpg"), add(r, "shop", "b.jpg")])
    for item, _ in pairs:
        r.set_item(item.item_id, status=READY, copy_path=f"copies/{item.item_id}")
    assert r.expired_copies() == []
    clock.now += 8 * 86400
    assert sorted(r.expired_copies()) == sorted(f"copies/{i.item_id}" for i, _ in pairs)
    assert {i.status for i in r.get(rid, "shop").items} == {EXPIRED}


def test_bad_requests_and_decisions(releases: tuple[Releases, Clock]) -> None:
    r, _ = releases
    mine, theirs = add(r, "shop", "door.mp4"), add(r, "bank", "atm.mp4")
    rid = ask(r)
    with pytest.raises(ResourceNotFound, match="not in your organisation's footage library"):
        r.release(rid, "shop", "ko", [theirs])
    assert r.get(rid, "shop").status == PENDING and r.get(rid, "shop").items == []  # nothing released
    with pytest.raises(ResourceNotFound, match="not to it"):
        r.release(rid, "police", "kp", [mine])
    with pytest.raises(ResourceNotFound):
        r.get(rid, "bank")  # a third organisation does not see it
    with pytest.raises(InvalidInput, match="at least one"):
        r.release(rid, "shop", "ko", [])
    with pytest.raises(InvalidInput, match="at most 30"):
        r.release(rid, "shop", "ko", [mine], expires_in_days=90)
    with pytest.raises(InvalidInput, match="end after it starts"):
        r.create(requester_org="p", requester_sector=None, requester_key="k", owner_org="shop", time_from=5,
                 time_to=5, place="x", reason="x", legal_basis="x", reference=None)  # fmt: skip
    assert r.decline(rid, "shop", "ko", "no warrant attached").status == DECLINED
    with pytest.raises(ReleaseStateError, match="declined"):
        r.take(rid, "itm-x", "police", "kp")
    assert [q.request_id for q in r.requests("shop", "owner")] == [rid] and r.requests(
        "shop", "requester"
    ) == []
