"""Backup and restore (issue 19, item 2): round trip on SQLite and PostgreSQL, a tampered, truncated
or incomplete backup, a wrong passphrase, a non-empty target, and erasures made after the backup
replayed from the erasure journal or from an audit export of the lost installation."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from facewarden.backup import archive
from facewarden.cli import main
from facewarden.config import Settings
from facewarden.errors import InvalidBackup, RestoreRefused, WrongPassphrase
from facewarden.service import Service
from facewarden.service.recovery import backup, replay_erasures, restore
from tests.conftest import CachedEngine
from tests.test_api_support import face

PASS = "correct horse battery staple"
ALICE = "barack_obama/barack_obama_1.jpg"
ALICE_PROBE = "barack_obama/barack_obama_2.jpg"
BOB = "joe_biden/joe_biden_1.jpg"


def open_service(settings: Settings, engine_cache: Any) -> Service:
    svc = Service(settings)
    svc.engine = CachedEngine(engine_cache)  # type: ignore[assignment]
    return svc


def populate(svc: Service) -> dict[str, str]:
    """An owner, a collection with alice and bob enrolled (with consent); subject -> face id."""
    svc.init_owner("clinic", "healthcare")
    owner = svc.owner_principal()
    svc.call("CreateCollection", {"CollectionId": "staff"}, owner)
    faces = {}
    for subject, photo in (("alice", ALICE), ("bob", BOB)):
        svc.call("GrantConsent", {"Subject": subject, "CollectionId": "staff", "Evidence": "form"}, owner)
        r = svc.call(
            "IndexFaces",
            {
                "CollectionId": "staff",
                "Image": {"Bytes": face(photo)},
                "ExternalImageId": subject,
                "MaxFaces": 1,
            },
            owner,
        )
        faces[subject] = r["FaceRecords"][0]["Face"]["FaceId"]
    return faces


def stored_faces(svc: Service) -> dict[str, str]:
    r = svc.call("ListFaces", {"CollectionId": "staff"}, svc.owner_principal())
    return {f["ExternalImageId"]: f["FaceId"] for f in r["Faces"]}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # The journal on "another volume" than the data directory, as the README advises.
    return Settings(data_dir=tmp_path / "data", erasure_journal=str(tmp_path / "journal" / "erasures.jsonl"))


def test_round_trip_serves_the_same_faces_and_replays_erasures_from_the_journal(
    settings: Settings, tmp_path: Path, engine_cache: Any
) -> None:
    svc = open_service(settings, engine_cache)
    faces = populate(svc)
    dest = tmp_path / "backups" / "night.fwbackup"
    m = backup(svc, svc.owner_principal(), dest, PASS)
    assert dest.stat().st_mode & 0o777 == 0o600
    assert m.installation == svc.audit.installation_id and m.dialect == "sqlite"
    assert "data/keys/secret.key" in m.files and "data/keys/audit_ed25519.pem" in m.files
    assert not any(name.startswith("data/index") or name == "data/audit.head" for name in m.files)
    backed_up = svc.audit.last_record("CreateBackup")
    assert backed_up is not None and backed_up["decision"] == "allowed"
    # after the backup: bob is erased (the journal, on another volume, records it)
    svc.call("EraseSubject", {"Subject": "bob"}, svc.owner_principal())
    assert set(stored_faces(svc)) == {"alice"}
    svc.close()
    shutil.rmtree(settings.data_dir)  # the disaster: the data directory and its database are gone

    res = restore(settings, dest, PASS)
    assert res.verify["Ok"] and res.warning is None
    assert [r["operation"] for r in res.replay.replayed] == ["EraseSubject"]
    assert res.replay.replayed[0]["faces_erased"] == 1
    svc = open_service(settings, engine_cache)
    try:
        assert stored_faces(svc) == {"alice": faces["alice"]}  # bob not resurrected
        hits = svc.call(
            "SearchFacesByImage", {"CollectionId": "staff", "Image": {"Bytes": face(ALICE_PROBE)}},
            svc.owner_principal(),
        )  # fmt: skip
        assert [m["Face"]["FaceId"] for m in hits["FaceMatches"]] == [faces["alice"]]
        consents = svc.call("ListConsents", {"Subject": "bob"}, svc.owner_principal())["Consents"]
        assert consents == []
        assert svc.audit.verify().ok
        replayed = list(svc.audit.records_of("ErasureReplayed"))
        assert len(replayed) == 1 and replayed[0]["subjects"] == [svc.audit.subject_ref("bob")]
        assert replayed[0]["details"]["original_operation"] == "EraseSubject"
        assert svc.audit.last_record("Restored") is not None
        # replaying the same journal again changes nothing
        again = replay_erasures(svc, [settings.erasure_journal_path])
        assert again.replayed == [] and again.already >= 1
    finally:
        svc.close()


def test_without_the_journal_the_restore_warns_and_an_audit_export_replays_later(
    tmp_path: Path, engine_cache: Any
) -> None:
    settings = Settings(data_dir=tmp_path / "data")  # journal inside the data directory: lost with it
    svc = open_service(settings, engine_cache)
    faces = populate(svc)
    dest = tmp_path / "b.fwbackup"
    backup(svc, svc.owner_principal(), dest, PASS)
    owner = svc.owner_principal()
    svc.call("WithdrawConsent", {"Subject": "alice", "CollectionId": "staff"}, owner)
    svc.call("DeleteFaces", {"CollectionId": "staff", "FaceIds": [faces["bob"]]}, owner)
    export = tmp_path / "export.jsonl"  # e.g. shipped off the machine by `facewarden audit export`
    export.write_text("".join(line + "\n" for _, line in svc.audit.export()))
    svc.close()
    shutil.rmtree(settings.data_dir)

    res = restore(settings, dest, PASS)
    assert res.warning and "--erasures" in res.warning
    svc = open_service(settings, engine_cache)
    try:
        assert set(stored_faces(svc)) == {"alice", "bob"}  # what the backup held
        r = replay_erasures(svc, [export])
        assert sorted(x["operation"] for x in r.replayed) == ["DeleteFaces", "WithdrawConsent"]
        assert stored_faces(svc) == {}
        assert svc.audit.verify().ok
    finally:
        svc.close()


def test_a_journal_line_not_signed_by_this_installation_is_rejected(
    settings: Settings, tmp_path: Path, engine_cache: Any
) -> None:
    svc = open_service(settings, engine_cache)
    populate(svc)
    dest = tmp_path / "b.fwbackup"
    backup(svc, svc.owner_principal(), dest, PASS)
    svc.call("EraseSubject", {"Subject": "bob"}, svc.owner_principal())
    svc.close()
    journal = settings.erasure_journal_path
    entry = json.loads(journal.read_text().splitlines()[-1])
    entry["record"]["subjects"] = ["subj-" + "0" * 32]  # edited: the hash no longer covers it
    forged = tmp_path / "forged.jsonl"
    forged.write_text(json.dumps(entry) + "\n")
    journal.unlink()
    shutil.rmtree(settings.data_dir)
    res = restore(settings, dest, PASS, [forged])
    assert res.replay.replayed == [] and len(res.replay.rejected) == 1
    assert "edited" in res.replay.rejected[0][1]


@pytest.fixture(scope="module")
def one_backup(tmp_path_factory: pytest.TempPathFactory, engine_cache: Any) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("one-backup")
    svc = open_service(Settings(data_dir=root / "live"), engine_cache)
    populate(svc)
    dest = root / "b.fwbackup"
    backup(svc, svc.owner_principal(), dest, PASS)
    svc.close()
    return dest, root / "live"


def _refused(src: Path, tmp_path: Path, passphrase: str = PASS) -> str:
    target = tmp_path / "target"
    with pytest.raises((InvalidBackup, RestoreRefused)) as exc:
        restore(Settings(data_dir=target), src, passphrase)
    assert not target.exists() or not any(target.iterdir()), "nothing may be written"
    assert not any(p.name.startswith(".facewarden-restore-") for p in tmp_path.iterdir())
    return exc.value.message


def test_wrong_passphrase_is_told_apart(one_backup: tuple[Path, Path], tmp_path: Path) -> None:
    src, _ = one_backup
    with pytest.raises(WrongPassphrase):
        restore(Settings(data_dir=tmp_path / "target"), src, "not the passphrase")
    assert "passphrase" in _refused(src, tmp_path, "not the passphrase").lower()


def test_tampered_backup_is_refused(one_backup: tuple[Path, Path], tmp_path: Path) -> None:
    src, _ = one_backup
    data = bytearray(src.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad = tmp_path / "tampered.fwbackup"
    bad.write_bytes(bytes(data))
    assert "tampered" in _refused(bad, tmp_path)


@pytest.mark.parametrize("cut", ["half", "block", "header"])
def test_truncated_backup_is_refused(
    one_backup: tuple[Path, Path], tmp_path: Path, cut: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, _ = one_backup
    if cut == "block":  # sealed in 4 KiB blocks, cut cleanly after the second one
        monkeypatch.setattr(archive, "CHUNK", 4096)
        src = tmp_path / "small-blocks.fwbackup"
        with src.open("wb") as out:
            sealed = archive.SealedWriter(out, PASS)
            sealed.write(os.urandom(20_000))
            sealed.close()
    data = src.read_bytes()
    head_end = data.index(b"\n", data.index(b"\n") + 1) + 1
    if cut == "block":
        end = head_end + 2 * (4 + 4096 + 16)
    elif cut == "header":
        end = head_end - 10
    else:
        end = len(data) // 2
    bad = tmp_path / "cut.fwbackup"
    bad.write_bytes(data[:end])
    message = _refused(bad, tmp_path)
    assert "truncated" in message or (cut == "header" and "header" in message)


def test_not_a_backup_and_a_backup_without_manifest(one_backup: tuple[Path, Path], tmp_path: Path) -> None:
    import io
    import tarfile

    junk = tmp_path / "junk"
    junk.write_bytes(b"hello")
    assert "not a facewarden backup" in _refused(junk, tmp_path)
    # sealed with the right passphrase, but the archive lacks its manifest (cut short while written)
    incomplete = tmp_path / "incomplete.fwbackup"
    with incomplete.open("wb") as out:
        sealed = archive.SealedWriter(out, PASS)
        with tarfile.open(fileobj=sealed, mode="w|") as tar:
            info = tarfile.TarInfo("database.sqlite3")
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
        sealed.close()
    assert "manifest" in _refused(incomplete, tmp_path)


def test_restore_refuses_a_non_empty_data_directory(
    one_backup: tuple[Path, Path], tmp_path: Path, engine_cache: Any
) -> None:
    src, live = one_backup
    # the data directory of another installation
    other = tmp_path / "other"
    svc = open_service(Settings(data_dir=other), engine_cache)
    svc.init_owner("other", "commercial")
    svc.close()
    before = sorted(p.name for p in other.iterdir())
    with pytest.raises(RestoreRefused, match="another installation"):
        restore(Settings(data_dir=other), src, PASS)
    assert sorted(p.name for p in other.iterdir()) == before
    # the installation the backup was taken of, still in place
    with pytest.raises(RestoreRefused, match="holds this installation already"):
        restore(Settings(data_dir=live), src, PASS)
    # any other file
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    with pytest.raises(RestoreRefused, match="not empty"):
        restore(Settings(data_dir=stray), src, PASS)


def test_cli_backup_and_restore(tmp_path: Path, engine_cache: Any) -> None:
    data = tmp_path / "data"
    svc = open_service(Settings(data_dir=data), engine_cache)
    populate(svc)
    svc.close()
    pw = tmp_path / "pass.txt"
    pw.write_text(PASS + "\n")
    runner = CliRunner()
    dest = tmp_path / "b.fwbackup"
    r = runner.invoke(
        main, ["--data-dir", str(data), "--json", "backup", str(dest), "--passphrase-file", str(pw)]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["Database"] == "sqlite"
    r = runner.invoke(main, ["--data-dir", str(data), "backup", str(dest), "--passphrase-file", str(pw)])
    assert r.exit_code == 3 and "already exists" in r.output
    target = tmp_path / "restored"
    r = runner.invoke(main, ["--data-dir", str(target), "restore", str(dest), "--passphrase-file", str(pw)])
    assert r.exit_code == 0, r.output
    assert "audit log verified" in r.output
    r = runner.invoke(main, ["--data-dir", str(target), "audit", "verify"])
    assert r.exit_code == 0, r.output
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("a wrong passphrase\n")
    r = runner.invoke(
        main, ["--data-dir", str(tmp_path / "t2"), "restore", str(dest), "--passphrase-file", str(wrong)]
    )
    assert r.exit_code == 3 and "Wrong passphrase" in r.output


@pytest.mark.postgres
def test_postgres_round_trip_with_pg_dump(pg_url: str, tmp_path: Path, engine_cache: Any) -> None:
    import pgserver

    from tests.conftest import fresh_pg_database

    tools = str(Path(pgserver.__file__).parent / "pginstall" / "bin")
    settings = Settings(
        data_dir=tmp_path / "data", database_url=fresh_pg_database(pg_url), pg_tools_dir=tools
    )
    svc = open_service(settings, engine_cache)
    faces = populate(svc)
    dest = tmp_path / "pg.fwbackup"
    m = backup(svc, svc.owner_principal(), dest, PASS)
    assert m.dialect == "postgresql" and "database.pgdump" in m.files
    svc.close()
    target = settings.replace(data_dir=tmp_path / "restored", database_url=fresh_pg_database(pg_url))
    res = restore(target, dest, PASS)
    assert res.verify["Ok"]
    svc = open_service(target, engine_cache)
    try:
        assert stored_faces(svc) == faces
    finally:
        svc.close()
    # a database that is not empty is refused
    with pytest.raises(RestoreRefused, match="not empty"):
        restore(target.replace(data_dir=tmp_path / "third"), dest, PASS)


def test_backup_while_the_service_keeps_writing(tmp_path: Path, engine_cache: Any) -> None:
    import threading

    settings = Settings(data_dir=tmp_path / "data")
    svc = open_service(settings, engine_cache)
    populate(svc)
    owner = svc.owner_principal()
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        while not stop.is_set():
            svc.call("CreateCollection", {"CollectionId": f"c{written[0]}"}, owner)
            written[0] += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        while written[0] < 3:
            stop.wait(0.01)
        m = backup(svc, owner, tmp_path / "live.fwbackup", PASS)
    finally:
        stop.set()
        t.join()
    assert written[0] > 3
    svc.close()
    target = Settings(data_dir=tmp_path / "restored")
    res = restore(target, tmp_path / "live.fwbackup", PASS)
    assert res.verify["Ok"] and res.head[0] >= m.audit_head[0]
    restored = open_service(target, engine_cache)
    try:
        cols = restored.call("ListCollections", {}, restored.owner_principal())["CollectionIds"]
        # every audited collection is in the copy; at most the one call in flight when the snapshot
        # was taken is there without its record (operations are audited once they committed, as
        # after a crash; erasures commit together with theirs)
        created = {r["collection"] for r in restored.audit.records_of("CreateCollection")}
        assert created <= set(cols) and len(set(cols) - created) <= 1
    finally:
        restored.close()
