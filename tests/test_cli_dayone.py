"""What a new user trips over on the command line: global options where they type them, files and
folders everywhere, usage errors for missing paths, dates people read, the first run before init."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from facewarden.cli import main

from .data import faces_dir

REPO = Path(__file__).resolve().parents[1]
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


@pytest.fixture(scope="module")
def fw(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("dayone")
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        """The command's output (stdout and stderr; with --json, stdout only)."""
        r = runner.invoke(main, list(args), catch_exceptions=False)
        assert r.exit_code == code, f"{args}: exit {r.exit_code}\n{r.output}"
        return r.stdout if "--json" in args else r.output

    run.data = str(data)  # type: ignore[attr-defined]
    run("--data-dir", str(data), "init", "--org-name", "acme", "--sector", "commercial")
    return run


def test_global_options_work_after_the_command(fw) -> None:
    d = fw.data
    # as the README's users type it: --json (and --data-dir) after the command
    key = json.loads(
        fw("key", "create", "--org", "acme", "--purpose", "access_control", "--json", "--data-dir", d)
    )
    assert set(key) == {"AccessKeyId", "SecretAccessKey"}
    assert key["AccessKeyId"] in fw("key", "list", "--data-dir", d)
    listed = json.loads(fw("key", "list", "--data-dir", d, "--json"))
    assert key["AccessKeyId"] in {k["AccessKeyId"] for k in listed["Keys"]}
    # --key after the command acts as that key (its purpose may not administer: refused, exit 4)
    out = fw("org", "list", "--data-dir", d, "--key", key["AccessKeyId"], code=4)
    assert "[admin_owner]" in out or "[purpose]" in out
    # and before the command, as before
    assert json.loads(fw("--json", "--data-dir", d, "org", "list"))["Organizations"][0]["Name"] == "acme"


def test_lists_show_iso_dates_to_people_and_keep_unix_times_in_json(fw) -> None:
    d = fw.data
    fw(*"key create --org acme --purpose access_control --expires 2027-06-30 --data-dir".split(), d)
    keys = fw("key", "list", "--data-dir", d)
    assert "2027-06-30T00:00:00Z" in keys and not re.search(r"\b1[78]\d{8}\.\d", keys)
    orgs = fw("org", "list", "--data-dir", d)
    assert ISO.search(orgs) and not re.search(r"\b1[78]\d{8}\.\d", orgs)
    fw("collection", "create", "dates", "--data-dir", d)
    fw(
        "consent",
        "grant",
        "alice",
        *"--collection dates --evidence form1 --expires 2030-01-01".split(),
        "--data-dir",
        d,
    )
    consents = fw("consent", "list", "--data-dir", d)
    assert "2030-01-01T00:00:00Z" in consents and not re.search(r"\b1[78]\d{8}\.\d", consents)
    raw = json.loads(fw("--json", "consent", "list", "--data-dir", d))
    assert isinstance(raw["Consents"][0]["GrantedAt"], float)  # JSON keeps the types
    assert ISO.search(fw("collection", "describe", "dates", "--data-dir", d))
    # a footage-release request shows the time asked for as dates too
    fw("org", "create", "insurer", "--sector", "commercial", "--data-dir", d)
    asker = json.loads(fw(*"key create --org insurer --purpose footage_release --json --data-dir".split(), d))
    shown = fw(
        *"release request --owner acme --from 2026-03-01T21:00Z --to 2026-03-01T23:00Z --place here".split(),
        *"--reason theft --legal-basis contract --key".split(),
        asker["AccessKeyId"],
        "--data-dir",
        d,
    )
    assert "2026-03-01T21:00:00Z to 2026-03-01T23:00:00Z" in shown and not re.search(
        r"\b1[78]\d{8}\.\d", shown
    )


def test_a_missing_path_is_a_usage_error_naming_it(fw, tmp_path: Path) -> None:
    d = fw.data
    missing = str(tmp_path / "no-such-photo.jpg")
    for args in (
        ["detect", missing],
        ["compare", missing, str(faces_dir() / "barack_obama/barack_obama_1.jpg")],
        ["search", missing, "--collection", "dates"],
        ["index", missing, "--collection", "dates"],
        ["cluster", missing],
        ["users", "search", "--collection", "dates", "--image", missing],
        ["redact", missing, "--out", str(tmp_path / "redacted")],
        ["redact", str(tmp_path / "no-such-photo.mp4"), "--out", str(tmp_path / "redacted.mp4")],
    ):
        out = fw(*args, "--data-dir", d, code=2)
        assert "does not exist" in out and "no-such-photo." in out, args
        assert "InvalidImageFormat" not in out


def test_image_commands_take_folders_recursively_images_only_sorted(fw, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    (photos / "b").mkdir(parents=True)
    (photos / "a").mkdir()
    obama, biden = faces_dir() / "barack_obama/barack_obama_1.jpg", faces_dir() / "joe_biden/joe_biden_1.jpg"
    (photos / "b" / "z.jpg").write_bytes(obama.read_bytes())
    (photos / "a" / "y.JPG").write_bytes(biden.read_bytes())
    (photos / "notes.txt").write_text("not an image")
    (photos / "a" / "x.png").write_bytes(
        (faces_dir() / "noface/dlib_dog.jpg").read_bytes()
    )  # a mislabelled jpeg
    lines = [json.loads(x) for x in fw("detect", str(photos), "--json", "--data-dir", fw.data).splitlines()]
    assert [x["Image"] for x in lines] == [
        str(photos / "a" / "x.png"),
        str(photos / "a" / "y.JPG"),
        str(photos / "b" / "z.jpg"),
    ]
    assert [len(x["FaceDetails"]) for x in lines] == [0, 1, 1]
    out = fw("detect", str(photos / "b"), str(obama), "--data-dir", fw.data)
    assert out.count("1 face") == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no images found" in fw("detect", str(empty), "--data-dir", fw.data, code=2)
    # redact likewise: a folder's images keep their place below --out, a file given by name its name
    out = tmp_path / "redacted"
    done = [
        json.loads(x)
        for x in fw(
            "redact", str(photos), str(obama), "--out", str(out), "--json", "--data-dir", fw.data
        ).splitlines()
    ]
    assert [(x["Image"], x["Output"], x["FacesHidden"]) for x in done] == [
        (str(photos / "a" / "x.png"), str(out / "a" / "x.png"), 0),
        (str(photos / "a" / "y.JPG"), str(out / "a" / "y.JPG"), 1),
        (str(photos / "b" / "z.jpg"), str(out / "b" / "z.jpg"), 1),
        (str(obama), str(out / obama.name), 1),
    ]
    assert all(Path(x["Output"]).is_file() for x in done) and not (out / "notes.txt").exists()
    assert "no images found" in fw("redact", str(empty), "--out", str(out), "--data-dir", fw.data, code=2)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "z.jpg").write_bytes(biden.read_bytes())
    clash = fw(
        "redact",
        str(photos / "b"),
        str(tmp_path / "other" / "z.jpg"),
        "--out",
        str(out),
        "--data-dir",
        fw.data,
        code=3,
    )
    assert "would both be redacted to z.jpg" in clash
    # search likewise: one line per image, naming it
    fw(
        "consent",
        "grant",
        "barack_obama",
        "--collection",
        "dates",
        "--evidence",
        "form 2",
        "--data-dir",
        fw.data,
    )
    fw(
        "index",
        str(faces_dir() / "barack_obama"),
        "--collection",
        "dates",
        "--external-id-from",
        "folder",
        "--workers",
        "1",
        "--data-dir",
        fw.data,
    )
    found = [
        json.loads(x)
        for x in fw(
            "search", str(photos), "--collection", "dates", "--json", "--data-dir", fw.data, code=3
        ).splitlines()
    ]
    by_file = {x["Image"]: x for x in found}
    assert set(by_file) == {
        str(p) for p in (photos / "a" / "x.png", photos / "a" / "y.JPG", photos / "b" / "z.jpg")
    }
    assert by_file[str(photos / "a" / "x.png")]["Error"]["Code"] == "InvalidParameterException"  # no face
    assert by_file[str(photos / "b" / "z.jpg")]["FaceMatches"][0]["Face"]["ExternalImageId"] == "barack_obama"


def test_cluster_prints_for_people_unless_json_is_asked(fw) -> None:
    sheldon, penny = str(faces_dir() / "sheldon"), str(faces_dir() / "penny")
    human = fw("cluster", sheldon, penny, "--workers", "1", "--data-dir", fw.data)
    assert "group 1" in human and "group 2" in human and not human.lstrip().startswith("{")
    data = json.loads(fw("cluster", sheldon, penny, "--workers", "1", "--json", "--data-dir", fw.data))
    assert len(data["groups"]) == 2
    assert json.loads(fw("cluster", sheldon, "--workers", "1", "--format", "json", "--data-dir", fw.data))[
        "groups"
    ]


def test_the_first_run_before_init_explains_init_and_the_sector_in_one_line(tmp_path: Path) -> None:
    r = CliRunner().invoke(
        main,
        ["--data-dir", str(tmp_path / "new"), "detect", str(faces_dir() / "barack_obama/barack_obama_1.jpg")],
    )
    assert r.exit_code == 2
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1, r.output
    text = lines[0]
    assert "moratorium" in text and "sector" in text
    command = text.split("Run: ", 1)[1]
    assert command.startswith("facewarden ") and " init " in command
    # the offered command works as printed
    args = command.split()[1:]
    assert CliRunner().invoke(main, args).exit_code == 0
    again = CliRunner().invoke(
        main,
        ["--data-dir", str(tmp_path / "new"), "detect", str(faces_dir() / "barack_obama/barack_obama_1.jpg")],
    )
    assert again.exit_code == 0 and "1 face" in again.output


def test_a_command_of_the_sibling_group_is_pointed_at(fw) -> None:
    # `keys` rotates the installation's keys, `key` manages access keys: a user who types one for
    # the other is told the command that exists
    out = fw("keys", "create", "--org", "acme", code=2)
    assert "No such command 'create'. Did you mean `facewarden key create`?" in out
    assert "rotate" not in out.split("Error:")[1]  # not click's guess among the wrong group's commands
    assert "Did you mean `facewarden" not in fw("key", "frobnicate", code=2)


def test_commands_named_in_the_console_exist() -> None:
    html = (REPO / "facewarden/api/console/index.html").read_text()
    named = re.findall(r"<code>facewarden ([a-z][a-z ]*?)</code>", html)
    assert named, "the console names the command that makes a key"
    for words in named:
        cmd: click.Command = main
        for word in words.split():
            assert isinstance(cmd, click.Group) and word in cmd.commands, (
                f"`facewarden {words}` does not exist"
            )
            cmd = cmd.commands[word]


def test_a_photo_library_never_enrols_the_same_photo_twice(tmp_path: Path) -> None:
    runner = CliRunner()
    d = str(tmp_path / "library")

    def fw(*args: str, key: str | None = None) -> str:
        env = {"FACEWARDEN_KEY": key} if key else {}
        r = runner.invoke(main, ["--data-dir", d, *args], env=env, catch_exceptions=False)
        assert r.exit_code == 0, f"{args}: {r.output}"
        return r.stdout

    fw("init", "--org-name", "me", "--sector", "individual")
    key = json.loads(fw("key", "create", "--org", "me", "--purpose", "photo_organisation", "--json"))[
        "AccessKeyId"
    ]
    fw("collection", "create", "family", "--consent", "household", key=key)
    pictures = tmp_path / "Pictures"
    for who in ("sheldon", "penny"):
        (pictures / "people" / who).mkdir(parents=True)
        for p in sorted((faces_dir() / who).iterdir())[:3]:
            (pictures / "people" / who / p.name).write_bytes(p.read_bytes())
    first = json.loads(
        fw(
            "index",
            str(pictures / "people"),
            "--collection",
            "family",
            "--external-id-from",
            "folder",
            "--workers",
            "1",
            "--json",
            key=key,
        )
    )
    assert first["faces_indexed"] == 6 and first["already_enrolled"] == []
    # the whole library again, and a copy of one photo under another name: nothing enrolled twice
    copy = pictures / "people" / "penny" / "copy-of-first.jpg"
    copy.write_bytes(sorted((pictures / "people" / "penny").iterdir())[0].read_bytes())
    human = runner.invoke(
        main,
        ["--data-dir", d, "index", str(pictures), "--collection", "family", "--workers", "1"],
        env={"FACEWARDEN_KEY": key},
    )
    assert human.exit_code == 0 and "note: 7 image(s) already enrolled in family" in human.output
    assert len(json.loads(fw("faces", "list", "--collection", "family", "--json", key=key))["Faces"]) == 6
    # clustering the same photos into the collection: enrolled faces are used, not enrolled again
    out = json.loads(
        fw(
            "cluster",
            str(pictures),
            "--collection",
            "family",
            "--make-users",
            "--workers",
            "1",
            "--json",
            key=key,
        )
    )
    assert len(out["skipped_known"]) == 7
    faces = json.loads(fw("faces", "list", "--collection", "family", "--json", key=key))["Faces"]
    assert len(faces) == 6
    made = {u["UserId"]: u["faces"] for u in out["users"]}
    assert sorted(made.values()) == [3, 3]  # penny's three faces (the copy is one of them), sheldon's
    users = {f.get("UserId") for f in faces}
    assert users == set(made), "each enrolled face joined its group's user"
    text = runner.invoke(
        main,
        [
            "--data-dir",
            d,
            "cluster",
            str(pictures / "people" / "penny"),
            "--collection",
            "family",
            "--workers",
            "1",
        ],
        env={"FACEWARDEN_KEY": key},
    )
    assert text.exit_code == 0 and "is already enrolled in family; not enrolled again" in text.output


def test_calibrate_skips_folders_that_are_not_one_person(fw, tmp_path: Path) -> None:
    labelled = tmp_path / "labelled"
    people = ("sheldon", "penny", "leonard", "howard")  # 150 impostor pairs: enough for a table
    picks = {who: [f"{who}/{p.name}" for p in sorted((faces_dir() / who).iterdir())] for who in people}
    picks["group"] = ["group/faceapi_bbt3.jpg", "group/face_recognition_two_people.jpg"]
    picks["noface"] = ["noface/dlib_dog.jpg", "noface/skimage_chelsea_cat.png"]
    for folder, rels in picks.items():
        (labelled / folder).mkdir(parents=True)
        for rel in rels:
            (labelled / folder / Path(rel).name).write_bytes((faces_dir() / rel).read_bytes())
    out = tmp_path / "table.json"
    args = ["calibrate", "--images", str(labelled), "--identity-from", "folder", "--out", str(out)]
    text = fw(*args, "--workers", "1", "--data-dir", fw.data)
    assert "skipped folder group/: 0 of its 2 images hold exactly one face (2 hold several" in text
    assert "skipped folder noface/" in text and "skipped folder penny/" not in text
    source = json.loads(out.read_text())["source"]
    assert source["identities"] == 4 and set(source["skipped_folders"]) == {"group", "noface"}
    assert source["images"] == sum(len(picks[who]) for who in people)


def test_set_sector_is_audited_and_an_enforcement_change_is_flagged(fw) -> None:
    d = fw.data
    fw("org", "create", "city-council", "--sector", "government", "--data-dir", d)
    key = json.loads(
        fw("key", "create", "--org", "city-council", "--purpose", "access_control", "--json", "--data-dir", d)
    )
    a, b = (str(faces_dir() / f"barack_obama/barack_obama_{i}.jpg") for i in (1, 2))
    assert "MATCH" in fw("compare", a, b, "--key", key["AccessKeyId"], "--data-dir", d)
    out = fw("org", "set-sector", "city-council", "law_enforcement", "--data-dir", d)
    assert "government -> law_enforcement" in out and "now fall under rule(s) moratorium" in out
    # the moratorium applies to its keys at once
    assert "[moratorium]" in fw("compare", a, b, "--key", key["AccessKeyId"], "--data-dir", d, code=4)
    assert "no longer fall under rule(s) moratorium" in fw(
        "org", "set-sector", "city-council", "government", "--data-dir", d
    )
    fw("org", "set-sector", "city-council", "education", "--data-dir", d)  # not an enforcement change
    report = json.loads(fw("report", "transparency", "--json", "--data-dir", d))
    changes = [(c["From"], c["To"]) for c in report["SectorChanges"] if c["Organization"] == "city-council"]
    assert changes == [
        ("government", "law_enforcement"),
        ("law_enforcement", "government"),
        ("government", "education"),
    ]
    flagged = [
        (c["From"], c["To"], c["DenyRulesEntered"], c["DenyRulesLeft"])
        for c in report["EnforcementSectorChanges"]
    ]
    assert flagged == [
        ("government", "law_enforcement", ["moratorium"], []),
        ("law_enforcement", "government", [], ["moratorium"]),
    ]
    records = [json.loads(line)["record"] for line in fw("audit", "export", "--data-dir", d).splitlines()]
    changed = [r for r in records if r["operation"] == "SetOrganizationSector"]
    assert len(changed) == 3 and changed[0]["details"]["deny_rules_changed"] is True
    assert changed[2]["details"]["deny_rules_changed"] is False
    assert "Unknown sector" in fw("org", "set-sector", "city-council", "police", "--data-dir", d, code=3)


def _serve(data_dir: str, *args: str) -> tuple[subprocess.Popen[str], str, int]:
    """Start `facewarden serve` on a free port; returns the process, what it printed and the port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.Popen(
        [sys.executable, "-m", "facewarden.cli", "--data-dir", data_dir, "serve", "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    printed = ""
    assert p.stdout is not None
    for line in p.stdout:
        printed += line
        if line.startswith("facewarden on "):
            break
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    return p, printed, port


def _stop(p: subprocess.Popen[str]) -> None:
    p.terminate()
    try:
        p.wait(40)
    except subprocess.TimeoutExpired:
        p.kill()
        raise


def test_serve_says_when_init_options_are_ignored(fw) -> None:
    p, printed, _ = _serve(fw.data, "--init-org", "other", "--init-sector", "education")
    _stop(p)
    assert "initialised already: owner organisation acme, declared sector commercial" in printed
    assert "facewarden org set-sector acme education" in printed
    p, printed, _ = _serve(
        fw.data, "--init-org", "my-organisation", "--init-sector", "commercial", "--init-defaults"
    )
    _stop(p)
    assert "note:" not in printed  # make serve's defaults, nobody asked: nothing to say
    # make passes --init-defaults only when ORG/SECTOR were not given
    plain = subprocess.run(["make", "-n", "serve"], cwd=REPO, capture_output=True, text=True).stdout
    given = subprocess.run(
        ["make", "-n", "serve", "ORG=acme"], cwd=REPO, capture_output=True, text=True
    ).stdout
    assert "--init-defaults" in plain and "--init-org acme" in given and "--init-defaults" not in given


def test_serve_over_tls_with_uvicorns_options(fw, tmp_path: Path) -> None:
    import datetime as dt

    import boto3
    import httpx
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    owner = json.loads((Path(fw.data) / "owner-key.json").read_text())
    p, printed, port = _serve(fw.data, "--ssl-certfile", str(cert_file), "--ssl-keyfile", str(key_file))
    try:
        assert f"facewarden on https://127.0.0.1:{port}/" in printed
        client = boto3.client(
            "rekognition",
            endpoint_url=f"https://127.0.0.1:{port}",
            region_name="us-east-1",
            aws_access_key_id=owner["AccessKeyId"],
            aws_secret_access_key=owner["SecretAccessKey"],
            verify=str(cert_file),
        )
        photo = (faces_dir() / "barack_obama/barack_obama_1.jpg").read_bytes()
        assert len(client.detect_faces(Image={"Bytes": photo})["FaceDetails"]) == 1
        client.close()  # (the server drains open connections when it stops)
        with pytest.raises(httpx.HTTPError):  # plain HTTP is not served on a TLS port
            httpx.get(f"http://127.0.0.1:{port}/v1/operations", timeout=5)
    finally:
        _stop(p)


def test_the_first_run_points_at_make_serves_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After `make serve`, forgetting FACEWARDEN_DATA_DIR is the likely mistake: the message says so."""
    (tmp_path / "checkout" / "data").mkdir(parents=True)
    (tmp_path / "checkout" / "data" / "owner-key.json").write_text("{}")
    monkeypatch.chdir(tmp_path / "checkout")
    r = CliRunner().invoke(main, ["--data-dir", str(tmp_path / "elsewhere"), "org", "list"])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1
    assert "export FACEWARDEN_DATA_DIR=$PWD/data" in r.output
