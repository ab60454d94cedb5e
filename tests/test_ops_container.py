"""The container (issue 19, item 4), tested without a container engine (none runs here or in CI).

* ``compose.yaml`` is validated against the Compose Specification's JSON schema (pinned copy in
  tests/data/compose-spec.json, compose-spec/compose-spec at 170098ba, Apache-2.0), and checked for
  what the README promises: PostgreSQL with pgvector, two service processes sharing keys behind one
  published port, an internal network, health checks.
* The Dockerfile is read instruction by instruction: slim base, non-root user, HEALTHCHECK on
  /healthz, the build steps in deploy/build.sh.
* deploy/build.sh, the image's build steps, runs on the host into a temporary folder (a fresh
  virtual environment from the package index, as the image build does) and its model check passes
  with the network blocked.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


def instructions() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_slim_non_root_healthcheck_and_build_steps() -> None:
    ins = instructions()
    bases = [arg for word, arg in ins if word == "FROM"]
    assert bases and all(re.fullmatch(r"python:3\.11-slim-\w+( AS \w+)?", b) for b in bases), bases
    users = [arg for word, arg in ins if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert "useradd" in " ".join(arg for word, arg in ins if word == "RUN")
    [health] = [arg for word, arg in ins if word == "HEALTHCHECK"]
    assert "/healthz" in health and "8750" in health
    assert ["sh deploy/build.sh /opt/facewarden"] == [
        arg for word, arg in ins if word == "RUN" and "build.sh" in arg
    ]
    cmd = json.loads(dict(ins)["CMD"])
    assert cmd[:1] == ["serve"] and "0.0.0.0" in cmd
    # nothing is downloaded at run time: no ADD of URLs, no fetching tools in the final stage
    assert not any(word == "ADD" for word, _ in ins)
    final = ins[max(i for i, (w, _) in enumerate(ins) if w == "FROM") :]
    assert not any(tool in arg for _, arg in final for tool in ("curl ", "wget ", "pip install"))


def compose() -> dict:
    return yaml.safe_load((REPO / "compose.yaml").read_text())


def test_compose_file_is_valid_against_the_compose_schema() -> None:
    import jsonschema_rs

    schema = json.loads((REPO / "tests" / "data" / "compose-spec.json").read_text())
    validator = jsonschema_rs.validator_for(schema)
    doc = compose()
    errors = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(doc)]
    assert not errors, errors
    # and a broken one is caught (the check can fail)
    broken = json.loads(json.dumps(doc))
    broken["services"]["proxy"]["healthcheck"]["interval"] = ["not", "a", "duration"]
    broken["services"]["db"]["restart_policy"] = "always"  # not a Compose key
    assert not validator.is_valid(broken)


def test_compose_two_processes_behind_one_port_on_postgres_with_pgvector() -> None:
    doc = compose()
    services = doc["services"]
    assert "pgvector" in services["db"]["image"]
    workers = [name for name, s in services.items() if s.get("image") == "facewarden:local"]
    assert sorted(workers) == ["facewarden-1", "facewarden-2"]
    for name in workers:
        s = services[name]
        assert s["environment"]["FACEWARDEN_DATABASE_URL"].startswith("postgresql://")
        assert "@db:5432/" in s["environment"]["FACEWARDEN_DATABASE_URL"]
        assert "facewarden-data:/var/lib/facewarden" in s["volumes"]  # the same key files
        assert "ports" not in s and s["networks"] == ["backend"]
    published = [n for n, s in services.items() if s.get("ports")]
    assert published == ["proxy"] and len(services["proxy"]["ports"]) == 1
    assert doc["networks"]["backend"]["internal"] is True
    assert services["db"]["networks"] == ["backend"]
    conf = (REPO / "deploy" / "nginx.conf").read_text()
    assert "server facewarden-1:8750" in conf and "server facewarden-2:8750" in conf
    assert "proxy_set_header Host $http_host" in conf  # SigV4 signs the Host header
    mount = services["proxy"]["volumes"][0].split(":")[0]
    assert (REPO / mount).resolve() == REPO / "deploy" / "nginx.conf"
    # every facewarden command line is one the CLI accepts
    from click.testing import CliRunner

    from facewarden.cli import main

    for name in workers:
        args = [a.replace("${FACEWARDEN_ORG:?set it in .env}", "x").replace("${FACEWARDEN_SECTOR:?set it in .env}", "commercial")
                for a in services[name]["command"]]  # fmt: skip
        r = CliRunner().invoke(main, [*args[:1], "--help"])
        assert r.exit_code == 0
        opts = {a for a in args if a.startswith("--")}
        assert opts <= set(re.findall(r"--[a-z-]+", r.output)), opts


@pytest.mark.slow
def test_the_image_build_steps_run_on_the_host(tmp_path: Path) -> None:
    """deploy/build.sh into a fresh folder: installs from the package index (as `docker build`
    does), then loads every model with the network blocked. Minutes: it installs everything."""
    prefix = tmp_path / "opt-facewarden"
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("VIRTUAL_ENV", None)
    proc = subprocess.run(
        ["sh", "deploy/build.sh", str(prefix)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "detector ran" in proc.stdout
    # the installed copy, not this checkout, is what ran
    assert str(prefix) in proc.stdout, proc.stdout
    out = subprocess.run(
        [str(prefix / "bin" / "facewarden"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "serve" in out and "backup" in out
