"""Time EPAM-Net's fast 2D layout against the naive Conv3d form of the same network, in one run.

For each stream (rgb, pose, epam) and each mode (forward in eval mode without autograd; forward +
backward in train mode with the two cross-entropy losses), four variants of the same weights are
timed: layout "frames" (Conv2d over N*T frames) or "clip" (the authors' Conv3d with 1 x k x k
kernels), each with channels_last off and on (channels_last_3d for the clip layout). Inputs are the
paper's clip sizes. Timing covers the model call (and backward) only; the variants are interleaved
round by round after warm-up, and each figure is the median over rounds, so slow drift of a shared
machine hits all variants alike. Prints a markdown table; "x naive" is the speed relative to the
clip layout without channels_last in the same run.

    .venv/bin/python scripts/bench_model.py [--streams rgb pose epam] [--batch 2] [--repeats 5] \
        [--warmup 2]
                                            [--threads 2] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import time
from collections.abc import Callable

import torch
from torch import nn

from epam_model import build_model, load_weights

SHAPES = {"rgb": (3, 16, 224, 224), "pose": (17, 48, 56, 56)}
VARIANTS = [
    ("clip", False),
    ("clip", True),
    ("frames", False),
    ("frames", True),
]  # (layout, channels_last)


def cpu_name() -> str:
    try:
        lines = subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        return next(
            line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name")
        )
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown CPU"


def make_variants(stream: str, device: torch.device) -> dict[tuple[str, bool], nn.Module]:
    """The same weights in every variant: built once in the frames layout, copied into the
    others."""
    torch.manual_seed(0)
    source = build_model(stream, 60)
    models = {}
    for layout, channels_last in VARIANTS:
        model = build_model(stream, 60, layout=layout)
        report = load_weights(model, source.state_dict())
        if not report.clean:
            raise RuntimeError("\n".join(report.lines()))
        model = model.to(device)
        if channels_last:
            model = model.to(
                memory_format=torch.channels_last if layout == "frames" else torch.channels_last_3d
            )
        models[(layout, channels_last)] = model
    return models


def make_step(
    model: nn.Module, inputs: tuple[torch.Tensor, ...], labels: torch.Tensor, backward: bool
) -> Callable:
    def forward() -> None:
        with torch.no_grad():
            model(*inputs)

    def forward_backward() -> None:
        out = model(*inputs)
        logits = tuple(out) if isinstance(out, tuple) else (out,)
        loss = sum(nn.functional.cross_entropy(x, labels) for x in logits)
        loss.backward()
        model.zero_grad(set_to_none=True)

    return forward_backward if backward else forward


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_stream(stream: str, args: argparse.Namespace, device: torch.device) -> list[dict]:
    models = make_variants(stream, device)
    generator = torch.Generator().manual_seed(1)
    names = ["rgb", "pose"] if stream == "epam" else [stream]
    inputs = tuple(
        torch.randn(args.batch, *SHAPES[name], generator=generator).to(device) for name in names
    )
    labels = torch.randint(0, 60, (args.batch,), generator=generator).to(device)
    rows = []
    for backward in (False, True):
        steps = {}
        for key, model in models.items():
            model.train(backward)
            steps[key] = make_step(model, inputs, labels, backward)
        times: dict[tuple[str, bool], list[float]] = {key: [] for key in steps}
        for round_index in range(args.warmup + args.repeats):
            for key, step in steps.items():
                sync(device)
                start = time.perf_counter()
                step()
                sync(device)
                if round_index >= args.warmup:
                    times[key].append(time.perf_counter() - start)
        naive = statistics.median(times[("clip", False)])
        for (layout, channels_last), samples in times.items():
            median = statistics.median(samples)
            rows.append(
                dict(
                    stream=stream,
                    mode="fwd+bwd" if backward else "fwd",
                    layout=layout,
                    channels_last=channels_last,
                    ms=1e3 * median,
                    clips_s=args.batch / median,
                    speedup=naive / median,
                    spread=(max(samples) - min(samples)) / median,
                )
            )
            print(
                f"  {stream} {rows[-1]['mode']} {layout} channels_last={channels_last}: "
                f"{1e3 * median:.0f} ms",
                flush=True,
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--streams", nargs="+", default=["rgb", "pose", "epam"], choices=["rgb", "pose", "epam"]
    )
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = [row for stream in args.streams for row in bench_stream(stream, args, device)]
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{cpu_name()}, {args.threads} threads"
    )
    print(
        f"\ntorch {torch.__version__}, {where}, batch {args.batch} clips at the paper's sizes, "
        f"median of {args.repeats} after {args.warmup} warm-up rounds\n"
    )
    print("| stream | mode | layout | channels_last | ms / batch | clips / s | x naive | spread |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    for row in rows:
        layout = "frames (Conv2d over N*T)" if row["layout"] == "frames" else "clip (naive Conv3d)"
        print(
            f"| {row['stream']} | {row['mode']} | {layout} | "
            f"{'on' if row['channels_last'] else 'off'} | {row['ms']:.0f} | {row['clips_s']:.2f} | "
            f"{row['speedup']:.2f} | {100 * row['spread']:.0f}% |"
        )


if __name__ == "__main__":
    main()
