"""Key rotation (issue 19, item 3): the secret-encryption key, the audit signing key (old records and
checkpoints still verify; a stale machine refuses to sign), each audited and safe when the
rotating process is SIGKILLed at any point; access keys rotated by their owner with an overlap,
through the wire with boto3."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from facewarden.api import create_app
from facewarden.api.testing import ServerThread, make_key
from facewarden.audit import AuditLog
from facewarden.config import Settings
from facewarden.errors import StorageError
from facewarden.policy.principals import Principals
from facewarden.service import Service
from facewarden.service import keys as key_ops
from tests.test_api_support import small_jpeg

REPO = Path(__file__).resolve().parent.parent
PROC = REPO / "tests" / "rotation_proc.py"


def new_service(data_dir: Path, **kw: Any) -> Service:
    svc = Service(Settings(data_dir=data_dir), sweep_on_start=False, **kw)
    return svc


@pytest.fixture
def installed(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A data directory with an owner and two more keys; key id -> secret."""
    data = tmp_path / "data"
    svc = new_service(data)
    owner, secret = svc.init_owner("acme", "commercial")
    secrets = {owner.key_id: secret}
    for purpose in ("photo_organisation", "access_control"):
        p, s = svc.principals.create_key("acme", purpose)
        secrets[p.key_id] = s
    for _ in range(5):
        svc.call("ListCollections", {}, owner)
    svc.close()
    return data, secrets


def secrets_of(svc: Service, keys: dict[str, str]) -> dict[str, str]:
    return {k: svc.lookup_secret(k)[1] for k in keys}


def test_secret_key_rotation_reencrypts_every_secret_and_is_audited(
    installed: tuple[Path, dict[str, str]],
) -> None:
    data, keys = installed
    svc = new_service(data)
    stale = Principals(svc.db, data, time.time)  # another process, opened before the rotation
    with svc.db.read() as tx:
        before = dict(tx.all("SELECT key_id, secret_enc FROM policy_keys"))
    old_key = (data / "keys" / "secret.key").read_bytes()
    d = key_ops.rotate_secrets(svc, svc.owner_principal())
    assert d["secrets_reencrypted"] == 3 and d["retired"] != d["fingerprint"]
    assert (data / "keys" / "secret.key").read_bytes() != old_key
    assert not (data / "keys" / "secret.key.new").exists()
    with svc.db.read() as tx:
        after = dict(tx.all("SELECT key_id, secret_enc FROM policy_keys"))
    assert all(after[k] != before[k] for k in before)
    assert secrets_of(svc, keys) == keys
    # the stale process re-reads the key files instead of failing, and encrypts with the new key
    assert {k: stale.lookup_secret(k)[1] for k in keys} == keys
    p, s = stale.create_key("acme", "research_audit")
    assert svc.lookup_secret(p.key_id)[1] == s
    rec = svc.audit.last_record("SecretKeyRotated")
    assert rec is not None and rec["details"]["fingerprint"] == d["fingerprint"]
    assert rec["key"] == svc.owner_principal().key_id
    assert svc.audit.verify().ok
    svc.close()


def test_audit_signing_key_rotation_keeps_old_records_verifiable(
    installed: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    data, _ = installed
    stale_copy = tmp_path / "stale-machine"
    shutil.copytree(data / "keys", stale_copy / "keys")  # a machine that missed the rotation
    svc = new_service(data, audit_checkpoint_every=3)
    other = AuditLog(svc.db, data, time.time)  # another process of this machine, opened before
    old_pub = svc.audit.keys.public_pem
    installation = svc.audit.installation_id
    rec = key_ops.rotate_audit_signing(svc, svc.owner_principal())
    assert rec["operation"] == "AuditKeyRotated" and rec["details"]["retired_public_key"] == old_pub
    assert svc.audit.keys.public_pem == rec["details"]["new_public_key"] != old_pub
    assert svc.audit.keys.history() == [old_pub, rec["details"]["new_public_key"]]
    assert svc.audit.installation_id == installation  # the first key names the installation
    owner = svc.owner_principal()
    for _ in range(7):
        svc.call("ListCollections", {}, owner)
    # the other process catches up before its next append, and signs with the new key
    other.append({"operation": "Probe", "decision": "recorded"})
    assert other.keys.public_pem == svc.audit.keys.public_pem
    result = svc.audit.verify()
    assert result.ok, result.problem
    assert result.last_checkpoint and result.last_checkpoint > rec["seq"]
    # old records and checkpoints verify with the retired key only
    with svc.db.read() as tx:
        cps = [int(s) for (s,) in tx.all("SELECT seq FROM audit_checkpoints")]
    assert any(s < rec["seq"] for s in cps) and rec["seq"] in cps
    # a machine whose key files missed the rotation refuses to sign rather than break the chain
    with pytest.raises(StorageError, match="copy DATA_DIR/keys"):
        AuditLog(svc.db, stale_copy, time.time)
    svc.close()


def test_a_forged_key_handover_is_caught(installed: tuple[Path, dict[str, str]]) -> None:
    data, _ = installed
    svc = new_service(data)
    key_ops.rotate_audit_signing(svc, svc.owner_principal())
    # someone with the key files rewrites the history to a key of their own
    history = data / "keys" / "audit_ed25519.history"
    import json

    from facewarden.audit.keys import _generate, load_private, public_pem

    mine = public_pem(load_private(_generate(), history))
    keys = json.loads(history.read_text())
    history.write_text(json.dumps([keys[0], mine]))
    result = svc.audit.verify()
    assert not result.ok and result.kind == "forged" and "key history" in result.problem
    svc.close()


def _kill_at(data: Path, which: str, point: str, tmp_path: Path) -> None:
    marker = tmp_path / f"marker-{which}-{point}"
    proc = subprocess.Popen([sys.executable, str(PROC), str(data), which, point, str(marker)], cwd=REPO)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, f"the rotation process exited with {proc.returncode} before {point}"
        assert time.monotonic() < deadline, f"the rotation never reached {point}"
        time.sleep(0.05)
    assert marker.read_text() == point
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.parametrize("point", ["prepared", "reencrypted", "committed"])
def test_secret_rotation_killed_midway_loses_nothing(
    installed: tuple[Path, dict[str, str]], tmp_path: Path, point: str
) -> None:
    data, keys = installed
    _kill_at(data, "secrets", point, tmp_path)
    svc = new_service(data)
    try:
        assert secrets_of(svc, keys) == keys  # every key still authenticates
        rotated = svc.audit.last_record("SecretKeyRotated")
        assert (rotated is not None) == (point == "committed")  # committed with its record, or not at all
        if point == "committed":  # the next process finished the file swap
            assert not (data / "keys" / "secret.key.new").exists()
        d = key_ops.rotate_secrets(svc, svc.owner_principal())  # and a new rotation completes
        assert d["secrets_reencrypted"] == 3
        assert secrets_of(svc, keys) == keys
        assert svc.audit.verify().ok
    finally:
        svc.close()


@pytest.mark.parametrize("point", ["prepared", "appended", "committed"])
def test_audit_key_rotation_killed_midway_loses_nothing(
    installed: tuple[Path, dict[str, str]], tmp_path: Path, point: str
) -> None:
    data, _ = installed
    old_pub = (data / "keys" / "audit_ed25519.pub").read_text()
    _kill_at(data, "audit-signing", point, tmp_path)
    svc = new_service(data)
    try:
        rotated = svc.audit.last_record("AuditKeyRotated")
        assert (rotated is not None) == (point == "committed")
        expected = rotated["details"]["new_public_key"] if rotated else old_pub
        assert svc.audit.keys.public_pem.strip() == expected.strip()
        svc.call("ListCollections", {}, svc.owner_principal())
        result = svc.audit.verify()
        assert result.ok, result.problem
        key_ops.rotate_audit_signing(svc, svc.owner_principal())
        svc.call("ListCollections", {}, svc.owner_principal())
        assert svc.audit.verify().ok
    finally:
        svc.close()


def test_only_the_owner_rotates_the_installations_keys(installed: tuple[Path, dict[str, str]]) -> None:
    from facewarden.errors import AccessDenied

    data, _ = installed
    svc = new_service(data)
    try:
        other = svc.principals.list_keys()[1]
        assert other.purpose == "photo_organisation"
        with pytest.raises(AccessDenied):
            key_ops.rotate_secrets(svc, other)
        denied = svc.audit.last_record("RotateKeys")
        assert denied is not None and denied["decision"] == "denied"
    finally:
        svc.close()


def test_the_rotations_from_the_command_line(installed: tuple[Path, dict[str, str]]) -> None:
    """`facewarden keys rotate secrets|audit-signing` and `facewarden key rotate --overlap`, as the
    README shows them."""
    import json

    from click.testing import CliRunner

    from facewarden.cli import main

    data, keys = installed
    runner = CliRunner()

    def fw(*args: str) -> Any:
        return runner.invoke(main, ["--data-dir", str(data), *args])

    r = fw("--json", "keys", "rotate", "secrets")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["secrets_reencrypted"] == len(keys)
    r = fw("--json", "keys", "rotate", "audit-signing")
    assert r.exit_code == 0, r.output
    handover = json.loads(r.output)
    assert handover["Fingerprint"] != handover["Retired"]
    photo_key = list(keys)[1]  # the photo_organisation key of the fixture (the owner's is first)
    r = fw("--key", photo_key, "--json", "key", "rotate", "--overlap", "600")
    assert r.exit_code == 0, r.output
    rotated = json.loads(r.output)
    new = rotated["AccessKey"]
    assert rotated["RetiringKey"]["AccessKeyId"] == photo_key
    assert abs(rotated["RetiringKey"]["ExpiresAt"] - (time.time() + 600)) < 60
    # a key that is not the owner's cannot rotate the installation's keys
    r = fw("--key", photo_key, "keys", "rotate", "secrets")
    assert r.exit_code == 4 and "AccessDeniedException" in r.output, r.output
    r = fw("audit", "verify")
    assert r.exit_code == 0, r.output
    svc = new_service(data)
    try:
        assert secrets_of(svc, keys) == keys  # every secret still opens with the new encryption key
        assert svc.lookup_secret(new["AccessKeyId"])[1] == new["SecretAccessKey"]
        assert len(list(svc.audit.records_of("SecretKeyRotated"))) == 1
        assert len(list(svc.audit.records_of("AuditKeyRotated"))) == 1
        allowed = [x for x in svc.audit.records_of("RotateKey") if x["decision"] == "allowed"]
        assert [x["details"]["new_key"] for x in allowed] == [new["AccessKeyId"]]
    finally:
        svc.close()


# ---- access keys, through the wire -----------------------------------------------------------------
def test_access_key_rotation_with_overlap_over_the_wire(tmp_path: Path, engine_cache: Any) -> None:
    from tests.conftest import CachedEngine

    svc = Service(Settings(data_dir=tmp_path / "data"))
    svc.engine = CachedEngine(engine_cache)  # type: ignore[assignment]
    svc.init_owner("operator", "commercial")
    key_id, secret = make_key(svc, "photos-inc", "commercial", "photo_organisation")
    with ServerThread(create_app(svc)) as url:

        def rek(k: str, s: str) -> Any:
            return boto3.client(
                "rekognition", endpoint_url=url, region_name="us-east-1", aws_access_key_id=k,
                aws_secret_access_key=s, config=Config(retries={"max_attempts": 1}),
            )  # fmt: skip

        jpeg = small_jpeg(width=160)
        r = httpx.post(
            f"{url}/v1/keys/rotate",
            json={"OverlapSeconds": 3600},
            headers={"Authorization": f"Bearer {key_id}:{secret}"},
        )
        assert r.status_code == 200, r.text
        new, retiring = r.json()["AccessKey"], r.json()["RetiringKey"]
        assert new["AccessKeyId"] != key_id and new["Purpose"] == "photo_organisation"
        assert new["Organization"] == "photos-inc" and retiring["AccessKeyId"] == key_id
        assert abs(retiring["ExpiresAt"] - (time.time() + 3600)) < 60
        # during the overlap both keys work
        rek(key_id, secret).detect_faces(Image={"Bytes": jpeg})
        rek(new["AccessKeyId"], new["SecretAccessKey"]).detect_faces(Image={"Bytes": jpeg})
        # once the overlap is over the old key is refused (with its rule) and the new one goes on;
        # an overlap of 0 ends it at once (SigV4 checks request times, so the clock is not moved)
        r = httpx.post(
            f"{url}/v1/keys/rotate",
            json={"OverlapSeconds": 0},
            headers={"Authorization": f"Bearer {new['AccessKeyId']}:{new['SecretAccessKey']}"},
        )
        assert r.status_code == 200, r.text
        newest = r.json()["AccessKey"]
        with pytest.raises(ClientError) as exc:
            rek(new["AccessKeyId"], new["SecretAccessKey"]).detect_faces(Image={"Bytes": jpeg})
        assert exc.value.response["Error"]["Code"] == "AccessDeniedException"
        assert "expired" in exc.value.response["Error"]["Message"]
        rek(newest["AccessKeyId"], newest["SecretAccessKey"]).detect_faces(Image={"Bytes": jpeg})
        rek(key_id, secret).detect_faces(Image={"Bytes": jpeg})  # still inside its own overlap
        # another organisation's key cannot be rotated by this one
        other_id, _ = make_key(svc, "someone-else", "commercial", "photo_organisation")
        r = httpx.post(
            f"{url}/v1/keys/rotate",
            json={"AccessKeyId": other_id},
            headers={"Authorization": f"Bearer {newest['AccessKeyId']}:{newest['SecretAccessKey']}"},
        )
        assert r.status_code == 403 and "another organisation" in r.text
    rotated = svc.audit.last_record("RotateKey")
    assert rotated is not None and rotated["decision"] == "denied"
    allowed = [x for x in svc.audit.records_of("RotateKey") if x["decision"] == "allowed"]
    assert allowed[0]["details"]["new_key"] == new["AccessKeyId"] and "SecretAccessKey" not in str(allowed[0])
    svc.close()
