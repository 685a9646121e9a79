#!/usr/bin/env bash
# The README's first command (`make demo`): the main job on a small sample, offline, on the CPU.
# Today that is split manifests from a name list; extract -> splits -> train -> eval join it as they land.
set -euo pipefail
cd "$(dirname "$0")/.."
out=demo_out
mkdir -p "$out"
.venv/bin/epam-data splits --dataset ntu60 --names scripts/demo/ntu60_names.txt --out "$out"
echo
echo "First rows of $out/manifests/xsub_train.csv:"
head -n 4 "$out/manifests/xsub_train.csv"
