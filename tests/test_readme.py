"""The README is run, so that the manual cannot drift from the code.

Every fenced code block of README.md is run or checked, in order, or is marked as not runnable
with a reason (how blocks are marked: the README's Development section):

* ``sh`` blocks run in bash (``set -eo pipefail``) in a sandbox that looks like a fresh checkout
  after a plain ``make serve``: ``.venv`` (this one), ``data/`` initialised by
  ``facewarden serve --init-org my-organisation --init-sector commercial`` (the server runs for the
  whole README, on a free port: ``127.0.0.1:8750`` in a block means it), and a home directory of
  its own. Shell variables, exports and the working directory carry from block to block, as in the
  reader's terminal.
* ``python`` blocks run with this interpreter, in the same directory and environment.
* ``toml`` blocks must parse.
* ``<!-- readme: photos NAME=faces/REL ... -->`` above a block first copies photos of
  ``../shared`` into the sandbox (``NAME`` relative to the working directory, or ``~/...`` in the
  sandbox's home; a name ending in ``/`` copies a folder).
* ``<!-- readme: skip REASON -->`` above a block: not run, and the reason is required.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SHARED = REPO.parent / "shared"
#: The address the README's examples use (make serve's); the sandbox's server stands in for it.
README_ADDRESS = "127.0.0.1:8750"
RUN = {"sh": "shell", "python": "python", "toml": "toml"}
_MARKER = re.compile(r"<!--\s*readme:\s*(?P<verb>\w+)\s*(?P<args>.*?)\s*-->", re.S)
_FENCE = re.compile(r"^(?P<indent>[ ]*)```(?P<lang>[\w-]*)[ ]*$")
_BLOCK_TIMEOUT_S = 900


@dataclass
class Block:
    line: int
    lang: str
    code: str
    markers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"L{self.line}-{self.lang or 'text'}"

    def marker(self, verb: str) -> str | None:
        return next((args for v, args in self.markers if v == verb), None)


def readme_blocks(text: str) -> list[Block]:
    """The fenced blocks of ``text`` with the markers (HTML comments) right above each."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, start = m.group("indent"), i
        end = next(
            (
                j
                for j in range(i + 1, len(lines))
                if lines[j].strip() == "```" and lines[j].startswith(indent)
            ),
            None,
        )
        assert end is not None, f"README line {i + 1}: a code block is not closed"
        code = "\n".join(line[len(indent) :] for line in lines[i + 1 : end]) + "\n"
        block = Block(start + 1, m.group("lang"), code)
        j = start - 1
        while j >= 0 and (lines[j].strip().startswith("<!--") or not lines[j].strip()):
            found = _MARKER.fullmatch(lines[j].strip())
            if found:
                block.markers.insert(0, (found.group("verb"), found.group("args")))
            elif lines[j].strip() and not lines[j].strip().endswith("-->"):
                break  # (other comments, such as a test's anchors, are passed over)
            j -= 1
        blocks.append(block)
        i = end + 1
    return blocks


BLOCKS = readme_blocks(README.read_text())


def test_every_block_is_run_or_marked_with_a_reason() -> None:
    assert len(BLOCKS) >= 10, "the README's blocks were not found"
    for b in BLOCKS:
        for verb, _args in b.markers:
            assert verb in ("skip", "photos"), f"README line {b.line}: unknown marker {verb!r}"
        skip = b.marker("skip")
        if skip is not None:
            assert len(skip.split()) >= 3, f"README line {b.line}: say why the block is not run"
            continue
        assert b.lang in RUN, (
            f"README line {b.line}: a ```{b.lang or ''} block is neither run (sh, python, toml) nor marked "
            "<!-- readme: skip REASON -->"
        )
    assert any(b.lang == "python" and b.marker("skip") is None for b in BLOCKS)


# ---- the sandbox ------------------------------------------------------------------------------
class Sandbox:
    """A fresh checkout after ``make serve``, a home directory, and a reader's shell state."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.checkout = root / "checkout"
        self.home = root / "home"
        self.checkout.mkdir()
        self.home.mkdir()
        self.scripts = root / "blocks"  # (not importable as anything: "facewarden" must be the package)
        self.scripts.mkdir()
        (self.checkout / ".venv").symlink_to(REPO / ".venv")
        self.state = root / "state.sh"
        self.env_file = root / "env"
        self.cwd_file = root / "cwd"
        self.cwd_file.write_text(str(self.checkout))
        self.state.write_text("")
        self.base_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("FACEWARDEN_", "VIRTUAL_ENV", "AWS_")) and k not in ("PYTHONPATH",)
        }
        venv_bin = str(REPO / ".venv" / "bin")
        self.base_env["PATH"] = os.pathsep.join(
            p for p in self.base_env.get("PATH", "").split(os.pathsep) if p and p != venv_bin
        )
        self.base_env.update(HOME=str(self.home), XDG_DATA_HOME=str(self.home / ".local" / "share"))
        self.exported = dict(self.base_env)
        self.server: subprocess.Popen[bytes] | None = None
        self.address = README_ADDRESS
        self.failed: str | None = None

    # -- make serve --------------------------------------------------------------------------
    def serve(self) -> None:
        """What a plain ``make serve`` does, on a free port."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**self.base_env, "FACEWARDEN_DATA_DIR": str(self.checkout / "data")}
        log = open(self.root / "serve.log", "wb")  # noqa: SIM115 - closed with the server
        self.server = subprocess.Popen(
            [
                str(REPO / ".venv" / "bin" / "facewarden"),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--init-org",
                "my-organisation",
                "--init-sector",
                "commercial",
                "--init-defaults",
            ],
            cwd=self.checkout,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.server.poll() is None, (self.root / "serve.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.3)
        else:  # pragma: no cover
            raise AssertionError("facewarden serve did not start:\n" + (self.root / "serve.log").read_text())
        self.address = f"127.0.0.1:{port}"

    def close(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(30)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.server.kill()

    # -- photos --------------------------------------------------------------------------------
    def place_photos(self, spec: str) -> None:
        cwd = Path(self.cwd_file.read_text().strip())
        for item in shlex.split(spec):
            name, sep, source = item.partition("=")
            assert sep and source, f"photos: write NAME=faces/REL, not {item!r}"
            src = SHARED / source
            dest = self.home / name[2:] if name.startswith("~/") else cwd / name
            if name.endswith("/"):
                assert src.is_dir(), src
                shutil.copytree(src, dest, dirs_exist_ok=True)
            else:
                assert src.is_file(), src
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest)

    # -- running blocks --------------------------------------------------------------------------
    def code(self, block: Block) -> str:
        return block.code.replace(README_ADDRESS, self.address)

    def run_shell(self, block: Block) -> subprocess.CompletedProcess[str]:
        script = self.scripts / f"block-{block.line}.sh"
        skip = (
            "BASH[A-Z_]*|EUID|UID|PPID|SHLVL|SHELLOPTS|PIPESTATUS|FUNCNAME|GROUPS|PWD|OLDPWD|RANDOM|"
            "SRANDOM|SECONDS|LINENO|HISTCMD|EPOCHREALTIME|EPOCHSECONDS|DIRSTACK|COLUMNS|LINES|_"
        )
        state, env, cwd = (shlex.quote(str(p)) for p in (self.state, self.env_file, self.cwd_file))
        script.write_text(
            "set -eo pipefail\n"
            f"source {state}\n"
            f'cd "$(cat {cwd})"\n'
            "__readme_save() {\n"  # what the reader's terminal keeps: variables, exports, directory
            f"  declare -p | grep -Ev '^declare -[a-zA-Z-]*r' | grep -Ev '^declare -[a-zA-Z-]* ({skip})=' > {state}.new\n"
            f"  env -0 > {env}\n"
            f"  pwd > {cwd}\n"
            "}\n"
            "trap __readme_save EXIT\n" + self.code(block)
        )
        r = subprocess.run(
            ["bash", str(script)],
            env=self.base_env,
            capture_output=True,
            text=True,
            timeout=_BLOCK_TIMEOUT_S,
        )
        if r.returncode == 0:
            Path(f"{self.state}.new").replace(self.state)
            raw = self.env_file.read_bytes().split(b"\0")
            self.exported = dict(e.decode().split("=", 1) for e in raw if b"=" in e)
        return r

    def run_python(self, block: Block) -> subprocess.CompletedProcess[str]:
        script = self.scripts / f"block-{block.line}.py"
        script.write_text(self.code(block))
        return subprocess.run(
            [sys.executable, str(script)],
            cwd=self.cwd_file.read_text().strip(),
            env=self.exported,
            capture_output=True,
            text=True,
            timeout=_BLOCK_TIMEOUT_S,
        )


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    if shutil.which("jq") is None:
        pytest.fail("The README's examples use jq (apt-get install jq).", pytrace=False)
    if not (SHARED / "faces").is_dir():
        pytest.fail(f"The README test needs the shared photos in {SHARED / 'faces'}.", pytrace=False)
    box = Sandbox(tmp_path_factory.mktemp("readme"))
    box.serve()
    try:
        yield box
    finally:
        box.close()


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.marker("skip") is None], ids=lambda b: b.id)
def test_readme_block(sandbox: Sandbox, block: Block) -> None:
    if sandbox.failed:
        pytest.skip(f"an earlier block failed ({sandbox.failed}); the README runs in order")
    if block.lang == "toml":
        tomllib.loads(block.code)
        return
    photos = block.marker("photos")
    if photos:
        sandbox.place_photos(photos)
    run = sandbox.run_shell if block.lang == "sh" else sandbox.run_python
    r = run(block)
    print(f"--- README line {block.line} ---\n{r.stdout}{r.stderr}")  # (pytest -s shows it)
    if r.returncode != 0:
        sandbox.failed = block.id
        pytest.fail(
            f"README line {block.line} ({block.lang}) exited {r.returncode}\n--- block ---\n{block.code}"
            f"--- stdout ---\n{r.stdout[-6000:]}\n--- stderr ---\n{r.stderr[-6000:]}",
            pytrace=False,
        )


def test_the_licence_file_is_the_one_pyproject_declares() -> None:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"]
    assert declared == "Apache-2.0"
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "[LICENSE](LICENSE)" in README.read_text()


def test_markers_are_found_above_other_comments() -> None:
    text = "<!-- readme: skip needs a camera here -->\n<!-- an-anchor -->\n\n```sh\nfalse\n```\n"
    (block,) = readme_blocks(text)
    assert block.marker("skip") == "needs a camera here"
    (block,) = readme_blocks("<!-- readme: skip a b c -->\nSome prose.\n```sh\nfalse\n```\n")
    assert block.marker("skip") is None  # prose between: the marker is not this block's
