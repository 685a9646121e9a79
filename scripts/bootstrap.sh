#!/usr/bin/env bash
# Creates .venv and installs epam into it (editable, with the test extras). Idempotent: when
# pyproject.toml, constraints.txt and this script are unchanged since the last successful run, it does nothing.
# torch is installed from constraints.txt first, so pip never resolves a bare `torch` (on the
# machines this project is built on that would pull several GB of CUDA packages).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
python=${PYTHON:-python3}
stamp="$venv/.epam-installed"
want=$(cat pyproject.toml constraints.txt scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/epam-data" ]; then
    exit 0
fi

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -c constraints.txt torch
"$venv/bin/python" -m pip install --quiet -c constraints.txt -e ".[test]"
# Files only, never imported: the BlazePose models inside the mediapipe wheel, and the test photograph
# inside scikit-image's (skimage/data/astronaut.png). --no-deps keeps their requirements (numpy<2, jax,
# opencv-contrib, scipy) out.
"$venv/bin/python" -m pip install --quiet -c constraints.txt --no-deps "mediapipe==0.10.21" "scikit-image==0.26.0"
echo "$want" > "$stamp"
echo "epam installed in $venv"
