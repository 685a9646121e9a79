#!/usr/bin/env bash
# Installs the OpenMMLab pose stack for `epam-data extract --backend mmlab | blazepose+mmpose`, with the pins and
# pip flags verified in docs/pose-backends.md section 5 (CPython 3.11, torch 2.13.0 CPU, numpy 2). None of it
# can be a plain pip extra: mmcv is compiled against the installed torch (--no-build-isolation), mmpose needs
# --no-deps (its requirements pull torchvision, and with it another multi-GB torch), and under numpy 2 xtcocotools
# must be rebuilt from source. Kept out of the default install and out of CI's critical path.
#
#   bash scripts/install_mmlab.sh            full: mmcv 2.1.0 compiled with its ops (20-30 min on 1-2 CPU cores),
#                                            mmengine 0.10.7, mmdet 3.3.0, mmpose 1.3.2 -> every backend and model
#   bash scripts/install_mmlab.sh --light    light: mmcv-lite 2.1.0 (no compiled ops), mmengine 0.10.7, mmpose
#                                            1.1.0 -> blazepose+mmpose with heatmap models (HRNet); about a minute
#
# Options: --python PATH (default: .venv/bin/python, else python3); --light; --constraint FILE (pip constraints on
# top of the installed torch: the bootstrap passes requirements.lock). Environment: MAX_JOBS (compile jobs,
# default: all cores); MMCV_WHEEL=path/to/mmcv-2.1.0-cp311-cp311-linux_x86_64.whl installs a wheel built earlier by
# this script for the same torch and Python instead of compiling again. The torch already installed is pinned, so
# pip never replaces it. On a CUDA machine mmcv's build also compiles its CUDA ops when nvcc is found (not verified
# here: these machines have no GPU); the CPU-only mmcv cannot run mmdet's NMS on CUDA tensors.
set -euo pipefail
cd "$(dirname "$0")/.."

light=0
python=""
constraint=""
while [ $# -gt 0 ]; do
    case "$1" in
        --light) light=1 ;;
        --python) python="$2"; shift ;;
        --constraint) constraint="$2"; shift ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "install_mmlab.sh: unknown argument $1 (use --light, --python PATH, --constraint FILE)" >&2; exit 2 ;;
    esac
    shift
done
if [ -z "$python" ]; then
    if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
fi

if ! torch_version=$("$python" -c "import torch; print(torch.__version__.split('+')[0])" 2>/dev/null); then
    echo "install_mmlab.sh: torch is not installed for $python; install epam first (make venv)" >&2
    exit 1
fi
pins=$(mktemp)
trap 'rm -f "$pins"' EXIT
echo "torch==$torch_version" > "$pins"  # whatever torch is there (CPU or CUDA build) stays
[ -z "$constraint" ] || grep -v -E "^torch==" "$constraint" >> "$pins"
pip_install() { "$python" -m pip install --quiet --disable-pip-version-check -c "$pins" "$@"; }
has() { "$python" -c "$1" >/dev/null 2>&1; }

# mmengine 0.10.7 imports pkg_resources at run time (gone from setuptools 82); torch 2.13 wants setuptools>=77.0.3.
# cython + wheel + ninja: the builds of mmcv and xtcocotools below.
pip_install "setuptools>=77.0.3,<82" wheel ninja cython

if [ "$light" = 1 ]; then
    if has "import mmcv.ops"; then
        echo "mmcv with compiled ops is installed already (the full stack): nothing to do for --light"
        exit 0
    fi
    pip_install "mmcv-lite==2.1.0" "mmengine==0.10.7" json_tricks munkres scipy "xtcocotools==1.14.3"
    pip_install --no-deps "mmpose==1.1.0"   # 1.2+ needs mmcv's ops at import (edpose_head) and torchvision
else
    if ! has "import mmcv.ops, mmcv; assert mmcv.__version__ == '2.1.0'"; then
        # mmcv-lite and mmcv ship the same `mmcv` folder: remove the lite one first, or its uninstall later
        # would delete files of the real one.
        "$python" -m pip uninstall --quiet -y mmcv-lite mmcv 2>/dev/null || true
        if [ -n "${MMCV_WHEEL:-}" ]; then
            pip_install --no-deps "$MMCV_WHEEL"
        else
            echo "compiling mmcv 2.1.0 with its ops against torch $torch_version (20-30 min on 1-2 cores) ..."
            # --no-build-isolation: the build must see the installed torch (isolated, it has none and skips the
            # ops, or fails on pkg_resources). --no-cache-dir: pip's wheel cache is keyed by the sdist, not by torch.
            MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" pip_install --no-build-isolation --no-cache-dir "mmcv==2.1.0"
        fi
    fi
    pip_install "mmengine==0.10.7" "mmdet==3.3.0" json_tricks munkres scipy matplotlib opencv-python pillow \
        "xtcocotools==1.14.3"
    pip_install --no-deps "mmpose==1.3.2"   # not chumpy (never imported, and it does not build on 3.11)
fi

# The xtcocotools wheel on PyPI is built against numpy 1 ("numpy.dtype size changed" under numpy 2): rebuild it
# against the numpy that is installed (a small Cython extension, ~10-30 s).
if ! has "import xtcocotools.mask"; then
    pip_install --force-reinstall --no-deps --no-build-isolation --no-binary xtcocotools "xtcocotools==1.14.3"
fi

if [ "$light" = 1 ]; then
    "$python" -c "from epam_data.pose.mmlab import _import_mmpose; m = _import_mmpose(); print('mmpose', m.__version__, 'ok (light: blazepose+mmpose with heatmap models)')"
else
    "$python" -c "from epam_data.pose.mmlab import _import_mmdet, _import_mmpose; d = _import_mmdet(); m = _import_mmpose(); print('mmdet', d.__version__, 'mmpose', m.__version__, 'ok (mmlab and blazepose+mmpose)')"
fi
