"""Penn Action, pose stream from scratch: train on the official train split, score test once.

The chain a user runs, end to end, on real annotations: `import-penn-action` (the annotated joints
as COCO-17 skeletons, pose-only shards), `splits` (official train / test, val carved from train),
`epam-train train --stream pose` with the from-scratch recipe (hyper-parameters chosen on val),
then one evaluation of best.pt on the official test split: top-1, mean class accuracy and the
confusion matrix (PNG), written to WORK/results_<preset>.json.

    .venv/bin/python scripts/bench_penn_action.py --preset cpu   # <= 60 min on 2 CPU cores
    .venv/bin/python scripts/bench_penn_action.py --preset paper --device cuda   # a GPU

A GPU machine without the annotations or scipy (this project's lent one) trains from shards made
elsewhere: `--prepare-only --data DIR` here (41 MB, pose only), then `--data DIR --no-import` there.

Presets (PRESETS): `cpu` trains on reduced clips (16 frames of 24 x 24 limb heatmaps, which learned
faster than joint ones on val) so that it fits an hour of a 2-core laptop; `paper` uses EPAM-Net's
clip (48 frames of 56 x 56 joint heatmaps). Every option of a preset can be overridden (`--epochs`,
`--frames`, `--size`, `--heatmap`, `--batch-size`, `--lr`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from epam_model.config import TrainConfig
from epam_model.engine import evaluate, train

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PENN = ROOT.parent / "shared" / "data" / "penn_action"
PRESETS = {
    "cpu": {"epochs": 36, "frames": 16, "size": 24, "batch_size": 16, "heatmap": "limb"},
    "paper": {"epochs": 60, "frames": 48, "size": 56, "batch_size": 16, "heatmap": "joint"},
}


def prepare(penn: Path, data: Path, jobs: int) -> None:
    """Pose-only shards of every annotated clip and the official manifests (resumes)."""
    from epam_data.extract import ExtractOptions
    from epam_data.penn_import import import_penn_action
    from epam_data.splits import make_splits, scan_index

    report = import_penn_action(
        penn, data, with_frames=False, options=ExtractOptions(max_persons=1), jobs=jobs
    )
    print(
        f"import: {report.ok} ok, {report.no_person} without a visible joint, "
        f"{report.failed} failed, {report.already_done} already done ({report.elapsed_s:.1f} s)"
    )
    dataset, scan = scan_index(data)
    splits = make_splits(scan, dataset, data)
    for counts in splits.counts:
        print("splits:", ", ".join(f"{key} {value}" for key, value in counts.items()))


def train_config(args: argparse.Namespace, data: Path, run: Path) -> TrainConfig:
    preset = {**PRESETS[args.preset], **{k: v for k, v in vars(args).items() if v is not None}}
    return TrainConfig(
        dataset_dir=str(data),
        protocol="official",
        out=str(run),
        stream="pose",
        epochs=preset["epochs"],
        batch_size=preset["batch_size"],
        lr=args.lr,
        pose_frames=preset["frames"],
        heatmap_size=preset["size"],
        heatmap=preset["heatmap"],
        workers=args.workers,
        threads=args.threads,
        device=args.device,
        seed=args.seed,
        progress=args.progress,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--penn", type=Path, default=DEFAULT_PENN, help="Penn_Action/ or labels/")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_penn_action")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--frames", type=int)
    parser.add_argument("--size", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--heatmap", choices=("joint", "limb", "both"))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--jobs", type=int, default=2, help="import processes")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--progress", action="store_true", help="a progress bar per epoch")
    parser.add_argument("--data", type=Path, help="the prepared shards [default: WORK/data]")
    parser.add_argument("--prepare-only", action="store_true", help="import and split, no training")
    parser.add_argument("--no-import", action="store_true", help="train on --data as it is")
    args = parser.parse_args()
    data, run = args.data or args.work / "data", args.work / f"run_{args.preset}"
    started = time.perf_counter()
    if not args.no_import:
        prepare(args.penn, data, args.jobs)
    if args.prepare_only:
        return
    if run.exists():
        shutil.rmtree(run)
    config = train_config(args, data, run)
    result = train(config)
    trained = time.perf_counter() - started
    scored = evaluate(run, data, "official", split="test", workers=args.workers, device=args.device)
    pose = scored.metrics["pose"]
    summary = {
        "preset": args.preset,
        "config": {k: v for k, v in config.to_dict().items() if k not in ("dataset_dir", "out")},
        "best_val": {"epoch": result.best_epoch, result.best_metric: result.best_value},
        "test": {"clips": scored.samples, **pose},
        "confusion_png": str(scored.files.get("confusion", "")),
        "minutes": {"train": trained / 60, "total": (time.perf_counter() - started) / 60},
    }
    out = args.work / f"results_{args.preset}.json"
    out.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(
        f"Penn Action official test, pose stream ({args.preset}): top-1 {100 * pose['top1']:.2f} %,"
        f" mean class acc {100 * pose['mean_class_acc']:.2f} % on {scored.samples} clips; best val "
        f"epoch {result.best_epoch}; {summary['minutes']['total']:.1f} min; {out}"
    )


if __name__ == "__main__":
    main()
