#!/usr/bin/env bash
# `make lock`: refreshes requirements.lock, the exact version of every package scripts/bootstrap.sh installs.
# It runs the bootstrap unlocked (the ranges of pyproject.toml, torch from constraints.txt) into a new venv in a
# temporary folder, then writes that venv's `pip freeze`. Review the diff, run `make test`, commit both.
# The lock is for CPython 3.11 on x86-64 Linux (the wheels this project is tested with); see the README.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
EPAM_VENV="$work/venv" EPAM_LOCK="" PYTHON="$python" scripts/bootstrap.sh
{
    echo "# Exact versions installed by scripts/bootstrap.sh, written by \`make lock\` on $(date -u +%Y-%m-%d)"
    echo "# with $("$work/venv/bin/python" -c 'import platform; print("CPython", platform.python_version(), platform.machine())')."
    echo "# The bootstrap uses it as pip constraints (-c) at every step, so a package it does not install is not"
    echo "# forced in; torch is the CPU build (constraints.txt)."
    "$work/venv/bin/python" -m pip freeze --exclude-editable --all | grep -v -E "^epam==" | LC_ALL=C sort -f
} > requirements.lock.partial
mv requirements.lock.partial requirements.lock
echo "requirements.lock: $(grep -c '==' requirements.lock) packages pinned"
