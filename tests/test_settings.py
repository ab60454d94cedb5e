"""Settings are read once, by facewarden/config.py, and handed down as one object."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from facewarden.config import Settings
from tests.conftest import REPO

PACKAGE = REPO / "facewarden"
#: An environment variable's name in code (not a sentence that mentions one).
VARIABLE = re.compile(r"FACEWARDEN_[A-Z0-9_]*")
#: The reads still to move into Settings: file -> the variables it may name. Each entry must still
#: be needed (the test fails when one is not), so the list only shrinks.
NOT_YET_SETTINGS: dict[str, set[str]] = {}


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def environment_names(source: str) -> set[str]:
    """The ``FACEWARDEN_*`` names a module's code holds as values: an ``os.environ`` key, an
    ``os.getenv`` argument, click's ``envvar=``, or a name put together (``f"FACEWARDEN_{...}"``).
    Docstrings and messages that mention a variable in a sentence do not count."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            skip.update(id(part) for part in node.values)
            head = node.values[0] if node.values else None
            if (
                isinstance(head, ast.Constant)
                and len(node.values) > 1
                and VARIABLE.fullmatch(str(head.value))
            ):
                found.add(head.value + "*")  # f"FACEWARDEN_{name}": a name put together
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            if VARIABLE.fullmatch(node.value):
                found.add(node.value)
    return found


def test_only_the_settings_module_reads_the_environment() -> None:
    seen: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel == "facewarden/config.py":
            continue
        names = environment_names(path.read_text())
        if names:
            seen[rel] = names
    unexpected = {f: n - NOT_YET_SETTINGS.get(f, set()) for f, n in seen.items()}
    unexpected = {f: n for f, n in unexpected.items() if n}
    assert not unexpected, (
        f"only facewarden/config.py reads FACEWARDEN_* variables; make these Settings fields: {unexpected}"
    )
    stale = {f: n - seen.get(f, set()) for f, n in NOT_YET_SETTINGS.items()}
    stale = {f: n for f, n in stale.items() if n}
    assert not stale, f"no longer read there: remove from NOT_YET_SETTINGS: {stale}"


@pytest.mark.parametrize(
    "source, names",
    [
        ('import os\nx = os.environ.get("FACEWARDEN_X", 1)', {"FACEWARDEN_X"}),
        ('import os\nx = os.getenv("FACEWARDEN_Y")', {"FACEWARDEN_Y"}),
        ('import os\nx = os.environ["FACEWARDEN_Z"]', {"FACEWARDEN_Z"}),
        ('import click\no = click.option("--k", envvar="FACEWARDEN_KEY")', {"FACEWARDEN_KEY"}),
        ('import os\nfor v in ("FACEWARDEN_T", "OMP"):\n    os.environ.setdefault(v, "1")', {"FACEWARDEN_T"}),
        ('import os\nx = os.environ.get(f"FACEWARDEN_{n}")', {"FACEWARDEN_*"}),
        ('"""Set FACEWARDEN_A=1."""\nraise ValueError("FACEWARDEN_B must be set")', set()),
        ('def f():\n    """FACEWARDEN_C"""\n    return 1', set()),
    ],
)
def test_the_scan_finds_reads_and_ignores_prose(source: str, names: set[str]) -> None:
    assert environment_names(source) == names


def test_settings_read_every_field_from_the_environment(tmp_path: Path) -> None:
    env = {
        "FACEWARDEN_DATA_DIR": str(tmp_path),
        "FACEWARDEN_GALLERY_ANN_THRESHOLD": "100",
        "FACEWARDEN_GALLERY_PG_SEARCH": "local",
        "FACEWARDEN_GALLERY_PG_ANN_THRESHOLD": "7",
        "FACEWARDEN_GALLERY_PG_EF_SEARCH": "400",
        "FACEWARDEN_KEY": "FWKEY",
        "FACEWARDEN_LANDMARKS_68": "yes",
        "FACEWARDEN_MATCH_THRESHOLD": "90.5",
    }
    s = Settings.from_env(env)
    assert (s.data_dir, s.gallery_ann_threshold, s.gallery_pg_search) == (tmp_path, 100, "local")
    assert (s.gallery_pg_ann_threshold, s.gallery_pg_ef_search, s.key) == (7, 400, "FWKEY")
    assert s.landmarks_68 is True and s.match_threshold == 90.5
    assert Settings.from_env(env, key="OTHER", data_dir=tmp_path / "x").key == "OTHER"
    assert Settings.from_env({}) == Settings()
