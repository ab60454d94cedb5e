"""What a new user trips over on the command line: global options where they type them, files and
folders everywhere, usage errors for missing paths, dates people read, the first run before init."""

from __future__ import annotations

import json
import re
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
    ):
        out = fw(*args, "--data-dir", d, code=2)
        assert "does not exist" in out and "no-such-photo.jpg" in out, args
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
