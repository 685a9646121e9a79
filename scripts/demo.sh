#!/usr/bin/env bash
# The README's first command (`make demo`): the main job on a small sample, offline, on the CPU:
# videos -> poses, RGB crops and heatmaps in HDF5 shards -> split manifests -> a short EPAM-Net training run ->
# evaluation, with a picture of one sample and one of the confusion matrix. About two minutes after the install.
set -euo pipefail
cd "$(dirname "$0")/.."
out=demo_out
bin=.venv/bin
# 12 real H.264 videos made from a photograph in scikit-image's wheel: A008 moves down, A009 up, 6 subjects.
$bin/python scripts/demo_videos.py "$out/videos"
# Safe to re-run: finished samples are skipped.
$bin/epam-data extract "$out/videos" --dataset ntu60 --out "$out/ntu60" --heatmaps joint,limb
$bin/epam-data verify "$out/ntu60"
$bin/epam-data splits "$out/ntu60"
$bin/epam-data render "$out/ntu60" S001C002P001R001A008 --out "$out/S001C002P001R001A008.png"
# Protocol rules on a larger list of names (two of them are meant to be rejected, with the reason).
$bin/epam-data splits --dataset ntu60 --names scripts/demo/ntu60_names.txt --out "$out/names"
$bin/epam-data info "$out/ntu60"
# EPAM-Net on the cross-subject split (subjects 1, 2, 4, 5 train; 3, 6 test), at reduced clip sizes so that it
# trains in about a minute on a CPU (the paper's sizes are the defaults: 48 pose frames, 224 px RGB, 56 px heatmaps).
# One compute thread and deterministic kernels: two runs of the demo on one machine print the same numbers. Another
# CPU rounds differently and 4 test videos make each one 25 points, so the README quotes no accuracy figure.
rm -rf "$out/run"
$bin/epam-train train "$out/ntu60" --protocol xsub --stream epam --out "$out/run" --epochs 20 --batch-size 4 \
    --lr 0.01 --pose-frames 16 --rgb-every 2 --rgb-size 112 --heatmap-size 28 --workers 1 --threads 1 --deterministic
$bin/epam-train eval "$out/run" "$out/ntu60" --protocol xsub --workers 0 --threads 1
echo
echo "demo done: prepared dataset in $out/ntu60, a sample drawn in $out/S001C002P001R001A008.png,"
echo "training run in $out/run (metrics.csv, best.pt), evaluation in $out/run/eval/xsub_test (metrics.json, confusion.png)"
