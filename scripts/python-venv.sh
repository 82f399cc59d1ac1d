#!/usr/bin/env bash
# Creates (once) the Python environment the server tests use: the official `openai` SDK and
# `prometheus_client` (its text-format parser), from PyPI. Idempotent; prints the path of its python.
#   scripts/python-venv.sh [DIR]   (default: .venv-test at the repository root)
# Uses `python3 -m venv`; where that module is missing (Debian without python3-venv) it falls back to
# `pip install --target` plus a small wrapper that puts those packages on PYTHONPATH.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${1:-$root/.venv-test}"
packages=(openai prometheus_client)
ready() { "$venv/bin/python" -c "import openai, prometheus_client" 2>/dev/null; }
if ! ready; then
  # One creator at a time (test binaries may run this concurrently).
  exec 9>"$venv.lock"
  flock 9
  if ! ready; then
    rm -rf "$venv"
    if python3 -m venv "$venv" >&2 2>/dev/null && [ -x "$venv/bin/pip" ]; then
      "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${packages[@]}" >&2
    else
      rm -rf "$venv"
      mkdir -p "$venv/bin"
      python3 -m pip install --quiet --disable-pip-version-check --target "$venv/site" "${packages[@]}" >&2
      printf '#!/bin/sh\nPYTHONPATH="%s${PYTHONPATH:+:$PYTHONPATH}" exec python3 "$@"\n' "$venv/site" \
        > "$venv/bin/python"
      chmod +x "$venv/bin/python"
    fi
  fi
fi
echo "$venv/bin/python"
