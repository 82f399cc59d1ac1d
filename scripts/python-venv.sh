#!/usr/bin/env bash
# Creates (once) the Python virtual environment the server tests use: the official `openai` SDK and
# `prometheus_client` (its text-format parser), from PyPI. Idempotent; prints the venv's python path.
#   scripts/python-venv.sh [VENV_DIR]   (default: .venv-test at the repository root)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${1:-$root/.venv-test}"
packages=(openai prometheus_client)
if ! "$venv/bin/python" -c "import openai, prometheus_client" 2>/dev/null; then
  # One creator at a time (test binaries may run this concurrently).
  exec 9>"$root/.venv-test.lock"
  flock 9
  if ! "$venv/bin/python" -c "import openai, prometheus_client" 2>/dev/null; then
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${packages[@]}" >&2
  fi
fi
echo "$venv/bin/python"
