#!/usr/bin/env bash
# The README's first command (`make demo`): the main job on a small sample, offline, on the CPU:
# videos -> poses, RGB crops and heatmaps in HDF5 shards -> split manifests -> a picture of one sample.
# Training and evaluation join it with their issue.
set -euo pipefail
cd "$(dirname "$0")/.."
out=demo_out
bin=.venv/bin
$bin/python scripts/demo_videos.py "$out/videos"
# Safe to re-run: finished samples are skipped.
$bin/epam-data extract "$out/videos" --dataset ntu60 --out "$out/ntu60" --heatmaps joint,limb
$bin/epam-data verify "$out/ntu60"
$bin/epam-data splits "$out/ntu60"
$bin/epam-data render "$out/ntu60" S001C001P001R001A001 --out "$out/S001C001P001R001A001.png"
# Protocol rules on a larger list of names (two of them are meant to be rejected, with the reason).
$bin/epam-data splits --dataset ntu60 --names scripts/demo/ntu60_names.txt --out "$out/names"
$bin/epam-data info "$out/ntu60"
