"""One prepared run that proves every CUDA path of epam and measures the model on a GPU.

    PYTHONPATH=. python3 scripts/gpu_check.py --out OUT            # GPU (--device cuda), < 6 min
    PYTHONPATH=. python3 scripts/gpu_check.py --smoke --out OUT    # CPU, tiny sizes, < 2 min

Why one script: GPU time comes in short, rare sessions, so everything that needs a GPU is prepared
and rehearsed here (`--smoke` runs the same code on the CPU) and runs in one go there. Each check
is timed, a failing check is recorded (status "failed" and its error line) and the next one runs;
`OUT/gpu_check.json` and `OUT/gpu_check.md` are rewritten after every check, so a run cut short
still leaves what it measured. Exit code 1 when a check failed, or at once with one line when
something the run needs is missing.

Checks: fp32 forward/backward on the device against the CPU per stream; bf16/fp16 autocast against
fp32; channels_last against contiguous; `render_torch` against numpy `render`; torch.compile
against eager; the CLI's synth -> train (AMP) -> --stop-after/--resume against an uninterrupted run
-> eval; the same training under torchrun with 2 processes (gloo); training speed of the fast and
the naive layout with AMP and compile; peak memory per clip; loader clips/s per worker; device
against loader heatmap rendering.
"""

from __future__ import annotations

import argparse
import csv
import ctypes
import importlib
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as scripts/gpu_check.py: the package lives one folder up
    sys.path.insert(0, str(ROOT))

REQUIRED = ("numpy", "torch", "h5py", "typer", "rich", "PIL", "yaml", "epam_data", "epam_model")


class Skip(Exception):
    """A check that cannot run here (e.g. needs CUDA); recorded as skipped with this reason."""


class Failed(Exception):
    """A check that ran but missed its tolerance; the message is its one error line."""


@dataclass(frozen=True)
class Sizes:
    """Every size of a run: the GPU run's (paper sizes for speed) or the CPU smoke run's."""

    batch: int = 2  # correctness checks
    rgb: tuple[int, ...] = (3, 8, 64, 64)  # rgb_size = 4 x heatmap side, T_pose = k x T_rgb
    pose: tuple[int, ...] = (17, 16, 16, 16)
    speed_batch: int = 16
    speed_rgb: tuple[int, ...] = (3, 16, 224, 224)
    speed_pose: tuple[int, ...] = (17, 48, 56, 56)
    warmup: int = 3
    steps: int = 10
    compile_backend: str = "inductor"
    compile_speed_streams: tuple[str, ...] = ("epam",)
    synth: tuple[str, ...] = ("--samples", "24", "--frames", "48", "--rgb-size", "64")
    train: tuple[str, ...] = (
        *("--pose-frames", "16", "--rgb-every", "2", "--rgb-size", "64", "--heatmap-size", "16"),
        *("--batch-size", "4", "--amp", "fp16", "--deterministic", "--lr", "0.05"),
    )
    epochs: int = 3
    workers: int = 2  # loader workers of the CLI runs
    loader_synth: tuple[str, ...] = ("--samples", "24", "--frames", "64", "--rgb-size", "256")
    loader_clip: dict[str, int] = field(default_factory=dict)  # ClipConfig: the paper's defaults
    loader_workers: tuple[int, ...] = (1, 4, 8, 16)
    loader_clips_per_worker: int = 40
    render_batch: int = 32
    timeout_s: int = 240  # per CLI subprocess
    budget_s: int = 330  # the whole run; later checks are skipped past it
    pose_frames: int = 120  # blazepose_torch: frames timed (after a 2-frame warm-up)
    upscale: bool = True  # blazepose_torch: frames upscaled to 1080p


FULL = Sizes()
SMOKE = Sizes(
    batch=2,
    rgb=(3, 4, 32, 32),
    pose=(17, 8, 8, 8),
    speed_batch=2,
    speed_rgb=(3, 4, 32, 32),
    speed_pose=(17, 8, 8, 8),
    warmup=1,
    steps=1,
    compile_backend="eager",  # dynamo tracing only: inductor's C++ build takes minutes on 2 cores
    compile_speed_streams=("pose",),
    synth=("--samples", "8", "--frames", "16", "--rgb-size", "32"),
    train=(
        *("--pose-frames", "4", "--rgb-every", "2", "--rgb-size", "32", "--heatmap-size", "8"),
        *("--batch-size", "2", "--threads", "1", "--lr", "0.05"),
    ),
    epochs=2,
    workers=0,
    loader_synth=("--samples", "8", "--frames", "16", "--rgb-size", "64"),
    loader_clip={"pose_frames": 8, "rgb_every": 2, "rgb_size": 32, "heatmap_size": 8},
    loader_workers=(1, 2),
    loader_clips_per_worker=6,
    render_batch=4,
    timeout_s=60,
    budget_s=150,
    pose_frames=4,
    upscale=False,
)


@dataclass
class Ctx:
    """What the checks share: options, device, sizes, folders and the results so far."""

    args: argparse.Namespace
    device: Any
    sizes: Sizes
    out: Path
    work: Path
    results: list[dict[str, Any]] = field(default_factory=list)
    goals: list[dict[str, Any]] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    start: float = field(default_factory=time.monotonic)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


# --- models and comparisons -----------------------------------------------------------------------


def rel_diff(got: Any, want: Any) -> float:
    """max |got - want| / max |want|: one scale-free figure for logits, weights and norms."""
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-12))


def make_model(stream: str, seed: int = 0, layout: str = "frames", random_bn: bool = True) -> Any:
    """A model whose every block computes something (random_bn): the authors' init zeroes each
    block's last BN gamma (blocks start as identities), which would leave most convs out of a
    comparison. Compare such a model in eval mode: in train mode, BN over the few values of a tiny
    clip's last stages blows rounding noise up (bf16: 60 % of the logits at 32 px)."""
    import torch

    from epam_model import build_model

    torch.manual_seed(seed)
    model = build_model(stream, 60, dropout=0.0, layout=layout)  # no dropout: same on both sides
    generator = torch.Generator().manual_seed(seed + 1)
    for module in model.modules() if random_bn else ():
        if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
            with torch.no_grad():
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                module.bias.copy_(0.2 * torch.rand(module.bias.shape, generator=generator) - 0.1)
    return model


def model_inputs_for(
    stream: str, batch: int, rgb: tuple, pose: tuple, device: Any, seed: int = 2
) -> tuple[tuple[Any, ...], Any]:
    """(inputs, labels) for `stream`: drawn on the CPU so both sides see the same numbers."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    shapes = {"rgb": [rgb], "pose": [pose], "epam": [rgb, pose]}[stream]
    inputs = tuple(torch.randn(batch, *shape, generator=generator).to(device) for shape in shapes)
    labels = torch.randint(0, 60, (batch,), generator=generator).to(device)
    return inputs, labels


def logits_of(out: Any) -> Any:
    """All logits of one forward as one [N, heads * classes] tensor (EpamOutput holds two)."""
    import torch

    return torch.cat([x.float() for x in out], 1) if isinstance(out, tuple) else out.float()


def loss_of(out: Any, labels: Any) -> Any:
    """The engine's loss: CE per head in fp32, summed."""
    import torch

    heads = tuple(out) if isinstance(out, tuple) else (out,)
    return sum(torch.nn.functional.cross_entropy(x.float(), labels) for x in heads)


def grad_norms(model: Any) -> dict[str, Any]:
    """Gradient norms of the first, a middle and the last parameter: stem, backbone, head."""
    named = [(n, p) for n, p in model.named_parameters() if p.grad is not None]
    picks = {named[0][0], named[len(named) // 2][0], named[-1][0]}
    return {name: p.grad.float().norm() for name, p in named if name in picks}


def fwd_bwd(
    model: Any, inputs: tuple, labels: Any, train: bool = False
) -> tuple[Any, Any, dict[str, Any]]:
    """(logits, loss, grad norms) of one forward and backward (BN in eval or train mode)."""
    model.train(train)
    model.zero_grad(set_to_none=True)
    out = model(*inputs)
    loss = loss_of(out, labels)
    loss.backward()
    return logits_of(out).detach(), loss.detach(), grad_norms(model)


def strict_fp32(ctx: Ctx) -> None:
    """No TF32 and no autotuning, so that the device computes the fp32 the CPU computes."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False


def compare_devices(ctx: Ctx, stream: str) -> dict[str, Any]:
    """fp32 forward + backward of one network on the CPU and on the device, same weights/inputs:
    BN in eval mode with random BN affines (every conv counts), then in train mode (batch
    statistics) with the authors' init."""
    strict_fp32(ctx)
    s = ctx.sizes
    cpu_in, cpu_labels = model_inputs_for(stream, s.batch, s.rgb, s.pose, "cpu")
    dev_in, dev_labels = model_inputs_for(stream, s.batch, s.rgb, s.pose, ctx.device)
    figures: dict[str, Any] = {}
    for train, prefix in ((False, ""), (True, "train_")):
        cpu_model = make_model(stream, random_bn=not train)
        dev_model = make_model(stream, random_bn=not train).to(ctx.device)
        want_logits, want_loss, want_grads = fwd_bwd(cpu_model, cpu_in, cpu_labels, train)
        got_logits, got_loss, got_grads = fwd_bwd(dev_model, dev_in, dev_labels, train)
        figures[f"{prefix}logits_rel"] = rel_diff(got_logits, want_logits)
        figures[f"{prefix}loss_rel"] = rel_diff(got_loss, want_loss)
        figures[f"{prefix}grad_norm_rel"] = max(
            rel_diff(got_grads[k], want_grads[k]) for k in want_grads
        )
    figures["grads_compared"] = sorted(want_grads)
    return within(figures, FP32_TOLERANCE)


FP32_TOLERANCE = {
    "logits_rel": 1e-4,
    "loss_rel": 1e-4,
    "grad_norm_rel": 1e-3,
    "train_logits_rel": 1e-3,
    "train_loss_rel": 1e-4,
    "train_grad_norm_rel": 1e-2,
}


def within(figures: dict[str, Any], tolerance: dict[str, float]) -> dict[str, Any]:
    """The figures with their tolerance; Failed naming the first figure beyond it."""
    figures["tolerance"] = tolerance
    for name, bound in tolerance.items():
        value = figures[name]
        if not (isinstance(value, float) and math.isfinite(value) and value <= bound):
            raise Failed(f"{name} = {value:.3g} exceeds {bound:g}  (figures: {short(figures)})")
    return figures


def short(figures: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" for k, v in figures.items() if isinstance(v, float))


# --- 1. correctness -------------------------------------------------------------------------------


def check_fp32(stream: str) -> Callable[[Ctx], dict[str, Any]]:
    def run(ctx: Ctx) -> dict[str, Any]:
        return compare_devices(ctx, stream)

    run.__doc__ = f"{stream}: fp32 forward + backward on the device against the CPU."
    return run


AMP_BOUNDS = {"bf16": 0.05, "fp16": 0.01}  # max |logits - fp32| / max |fp32 logits|


def check_amp(amp: str) -> Callable[[Ctx], dict[str, Any]]:
    def run(ctx: Ctx) -> dict[str, Any]:
        import torch

        if amp == "fp16" and not ctx.cuda:
            raise Skip("fp16 autocast is CUDA-only in the engine (the CPU falls back to fp32)")
        strict_fp32(ctx)
        s, dtype = ctx.sizes, torch.bfloat16 if amp == "bf16" else torch.float16
        model = make_model("epam").to(ctx.device).eval()
        inputs, labels = model_inputs_for("epam", s.batch, s.rgb, s.pose, ctx.device)
        with torch.no_grad():
            want = logits_of(model(*inputs))
            with torch.autocast(ctx.device.type, dtype=dtype):
                got = model(*inputs)
        trained = make_model("epam", random_bn=False).to(ctx.device).train()
        scaler = torch.amp.GradScaler(ctx.device.type, enabled=amp == "fp16")
        optimizer = torch.optim.SGD(trained.parameters(), lr=0.0)
        with torch.autocast(ctx.device.type, dtype=dtype):
            loss = loss_of(trained(*inputs), labels)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        grads = torch.stack([p.grad.float().norm() for p in trained.parameters()])
        figures = {
            "logits_rel": rel_diff(logits_of(got), want),
            "train_loss": float(loss.detach()),
            "grads_finite": bool(torch.isfinite(grads).all()),
            "logits_dtype": str(got.rgb.dtype),
        }
        if not math.isfinite(figures["train_loss"]) or not figures["grads_finite"]:
            raise Failed(f"{amp}: loss {figures['train_loss']} or gradients not finite")
        return within(figures, {"logits_rel": AMP_BOUNDS[amp]})

    run.__doc__ = f"EPAM-Net under {amp} autocast: finite loss and grads, logits near fp32."
    return run


def check_channels_last(ctx: Ctx) -> dict[str, Any]:
    """channels_last (the engine's default) against contiguous on the device, same weights: BN in
    eval mode (random BN affines), then in train mode (authors' init)."""
    import torch

    strict_fp32(ctx)
    s = ctx.sizes
    inputs, labels = model_inputs_for("epam", s.batch, s.rgb, s.pose, ctx.device)
    figures: dict[str, Any] = {}
    for train, prefix in ((False, ""), (True, "train_")):
        plain = make_model("epam", random_bn=not train).to(ctx.device)
        last = make_model("epam", random_bn=not train).to(ctx.device)
        last = last.to(memory_format=torch.channels_last)
        want_logits, _, want_grads = fwd_bwd(plain, inputs, labels, train)
        got_logits, _, got_grads = fwd_bwd(last, inputs, labels, train)
        figures[f"{prefix}logits_rel"] = rel_diff(got_logits, want_logits)
        figures[f"{prefix}grad_norm_rel"] = max(
            rel_diff(got_grads[k], want_grads[k]) for k in want_grads
        )
    tolerance = {k: v for k, v in FP32_TOLERANCE.items() if "loss" not in k}
    return within(figures, tolerance)


def check_render(ctx: Ctx) -> dict[str, Any]:
    """`render_torch` on the device against numpy `render`, clip by clip, joints and limbs."""
    import numpy as np
    import torch

    from epam_data.heatmaps import render, render_torch

    rng = np.random.default_rng(0)
    n, m, t, v, side = 3, 2, 8, 17, 56
    keypoints = rng.uniform(-3, side + 3, (n, m, t, v, 2)).astype(np.float32)
    scores = rng.uniform(0, 1, (n, m, t, v)).astype(np.float32)
    scores[0, 1] = 0  # a missing second person
    figures: dict[str, Any] = {}
    for kind in ("joint", "limb"):
        got = render_torch(
            torch.from_numpy(keypoints).to(ctx.device),
            torch.from_numpy(scores).to(ctx.device),
            (side, side),
            kind=kind,
        ).cpu()
        want = np.stack(
            [render(keypoints[i], scores[i], (side, side), kind=kind) for i in range(n)]
        )
        figures[f"{kind}_max_abs"] = float(np.abs(got.numpy() - want).max())
    return within(figures, {"joint_max_abs": 1e-5, "limb_max_abs": 1e-5})


def check_compile(ctx: Ctx) -> dict[str, Any]:
    """torch.compile(EPAM-Net) on the device against eager, eval-mode forward (fp32, no TF32)."""
    import torch

    strict_fp32(ctx)
    s = ctx.sizes
    model = make_model("epam").to(ctx.device).eval()
    inputs, _ = model_inputs_for("epam", s.batch, s.rgb, s.pose, ctx.device)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=ctx.sizes.compile_backend, dynamic=False)
    with torch.no_grad():
        want = logits_of(model(*inputs))
        start = time.perf_counter()
        got = logits_of(compiled(*inputs))
        compile_s = time.perf_counter() - start
    figures = {
        "logits_rel": rel_diff(got, want),
        "backend": ctx.sizes.compile_backend,
        "compile_s": compile_s,
        "nan": int(got.isnan().sum()),
    }
    return within(figures, {"logits_rel": 1e-3})


# --- 2. training through the CLI ------------------------------------------------------------------


def cli(ctx: Ctx, tool: str, *args: str, torchrun: bool = False) -> str:
    """Run `epam-data` or `epam-train` in a subprocess (the console scripts may not be installed);
    returns stdout, Failed with the last error line when it exits non-zero or times out."""
    py = sys.executable
    if tool == "data":
        cmd = [py, "-c", "from epam_data.cli import app; app(prog_name='epam-data')", *args]
    elif torchrun:
        run = [py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        cmd = [*run, "-m", "epam_model.cli", *args]
    else:
        cmd = [py, "-m", "epam_model.cli", *args]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
        "COLUMNS": "200",
    }
    if torchrun:
        env["EPAM_DIST_BACKEND"] = "gloo"  # nccl refuses two ranks on one GPU
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=ctx.sizes.timeout_s, cwd=ROOT
        )
    except subprocess.TimeoutExpired:
        raise Failed(f"{tool} {args[0]}: no result in {ctx.sizes.timeout_s} s") from None
    log = ctx.work / "cli.log"
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"$ {' '.join(cmd)}\n{done.stdout}{done.stderr}\n")
    if done.returncode:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise Failed(f"{tool} {args[0]} exit {done.returncode}: {lines[-1] if lines else ''}")
    return done.stdout


def train_args(ctx: Ctx, run_dir: Path, *extra: str, workers: int | None = None) -> list[str]:
    """`train` options of the check runs: small clips, the device, no progress bars."""
    data = str(ctx.work / "data")
    device = "cuda:0" if ctx.cuda else "cpu"
    workers = ctx.sizes.workers if workers is None else workers
    return [
        *("train", data, "--protocol", "synth", "--out", str(run_dir), "--stream", "epam"),
        *ctx.sizes.train,
        *("--device", device, "--workers", str(workers), "--no-progress"),
        *extra,
    ]


def last_state(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, str]]]:
    import torch

    payload = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
    with (run_dir / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return payload["model"], rows


def check_synth(ctx: Ctx) -> dict[str, Any]:
    """The small prepared dataset of the training checks, written by `epam-data synth`."""
    cli(ctx, "data", "synth", str(ctx.work / "data"), *ctx.sizes.synth)
    return {"shards": len(list((ctx.work / "data" / "shards").glob("*.h5")))}


def check_resume(ctx: Ctx) -> dict[str, Any]:
    """`train` for E epochs against `--stop-after 1` then `--resume`: same weights and metrics,
    with loader workers as a real run has them (persistent workers: one loader iterator per run; a
    resumed run makes another, which must not move the global RNG)."""
    epochs = str(ctx.sizes.epochs)
    whole, parts = ctx.work / "run_whole", ctx.work / "run_resumed"
    cli(ctx, "train", *train_args(ctx, whole, "--epochs", epochs))
    cli(ctx, "train", *train_args(ctx, parts, "--epochs", epochs, "--stop-after", "1"))
    cli(ctx, "train", *train_args(ctx, parts, "--resume"))
    want, want_rows = last_state(whole)
    got, got_rows = last_state(parts)
    floats = [k for k, v in want.items() if v.is_floating_point()]
    figures = {
        "epochs": len(got_rows),
        "weights_rel": max(rel_diff(got[k], want[k]) for k in floats),
        "bit_identical": all(bool((got[k] == want[k]).all()) for k in floats),
        "train_loss": float(want_rows[-1]["train_loss"]),
        "loss_rel": abs(float(got_rows[-1]["train_loss"]) / float(want_rows[-1]["train_loss"]) - 1),
        "clips_per_s": float(want_rows[-1]["clips_per_s"]),
    }
    if len(got_rows) != ctx.sizes.epochs or not math.isfinite(figures["train_loss"]):
        raise Failed(f"resumed run: {len(got_rows)} epochs, loss {figures['train_loss']}")
    bound = 1e-3 if ctx.cuda else 1e-6  # CUDA: --deterministic, yet atomics in a few backward ops
    return within(figures, {"weights_rel": bound, "loss_rel": bound})


def check_eval(ctx: Ctx) -> dict[str, Any]:
    """`eval` of the uninterrupted run: its fused top-1 equals the best epoch's validation
    top-1."""
    run_dir, out = ctx.work / "run_whole", ctx.work / "eval"
    if not (run_dir / "best.pt").is_file():
        raise Failed("no run_whole/best.pt: the resume check did not train")
    device = "cuda:0" if ctx.cuda else "cpu"
    cli(
        ctx,
        "train",
        "eval",
        str(run_dir),
        str(ctx.work / "data"),
        "--protocol",
        "synth",
        "--device",
        device,
        "--workers",
        str(ctx.sizes.workers),
        "--out",
        str(out),
    )
    metrics = json.loads((out / "metrics.json").read_text())
    _, rows = last_state(run_dir)
    best = max(float(row["val_top1"]) for row in rows)
    figures = {"fused_top1": metrics["fused"]["top1"], "best_val_top1": best}
    figures["top1_diff"] = abs(figures["fused_top1"] - best)
    return within(figures, {"top1_diff": 1e-6})


def check_torchrun(ctx: Ctx) -> dict[str, Any]:
    """The same training under torchrun, 2 processes on one device with gloo.

    nccl refuses two ranks on one GPU, so `$EPAM_DIST_BACKEND=gloo` (epam_model.distributed) runs
    them with gloo and CUDA tensors; NCCL itself needs two GPUs."""
    run_dir = ctx.work / "run_ddp"
    output = cli(ctx, "train", *train_args(ctx, run_dir, "--epochs", "1"), torchrun=True)
    _, rows = last_state(run_dir)
    figures = {
        "world_size_2": "2 x batch" in output,
        "train_loss": float(rows[-1]["train_loss"]),
        "clips_per_s": float(rows[-1]["clips_per_s"]),
        "backend": "gloo (nccl needs 2 GPUs)" if ctx.cuda else "gloo (CPU)",
    }
    if not figures["world_size_2"] or not math.isfinite(figures["train_loss"]):
        raise Failed(f"torchrun: world size 2 not seen or loss {figures['train_loss']}")
    return figures


# --- 3. speed -------------------------------------------------------------------------------------


def timed_steps(ctx: Ctx, model: Any, stream: str, amp: str) -> dict[str, float]:
    """Training steps (autocast forward, CE, scaled backward, SGD) at the speed sizes: clips/s and
    peak device memory per clip."""
    import torch

    s = ctx.sizes
    inputs, labels = model_inputs_for(stream, s.speed_batch, s.speed_rgb, s.speed_pose, ctx.device)
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=amp == "fp16")
    model.train()

    def step() -> None:
        with torch.autocast(ctx.device.type, dtype=dtype, enabled=amp != "off"):
            loss = loss_of(model(*inputs), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(s.warmup):
        step()
    sync(ctx)
    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats(ctx.device)
    start = time.perf_counter()
    for _ in range(s.steps):
        step()
    sync(ctx)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(ctx.device) / 2**20 if ctx.cuda else float("nan")
    return {"clips_s": s.steps * s.speed_batch / seconds, "peak_mib_per_clip": peak / s.speed_batch}


def sync(ctx: Ctx) -> None:
    import torch

    if ctx.cuda:
        torch.cuda.synchronize(ctx.device)


def speed_setup(ctx: Ctx) -> None:
    """Speed runs as training runs: cuDNN autotuning, TF32 allowed (PyTorch's conv default)."""
    import torch

    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = True


def check_speed(stream: str) -> Callable[[Ctx], dict[str, Any]]:
    def run(ctx: Ctx) -> dict[str, Any]:
        import torch

        speed_setup(ctx)
        figures: dict[str, Any] = {}
        for amp in SPEED_AMPS if ctx.cuda else ("off",):
            fast = make_model(stream).to(ctx.device).to(memory_format=torch.channels_last)
            got = timed_steps(ctx, fast, stream, amp)
            del fast
            naive = timed_steps(ctx, make_model(stream, layout="clip").to(ctx.device), stream, amp)
            figures[f"{amp}_fast_clips_s"] = got["clips_s"]
            figures[f"{amp}_naive_clips_s"] = naive["clips_s"]
            figures[f"{amp}_fast_over_naive"] = got["clips_s"] / naive["clips_s"]
            figures[f"{amp}_fast_peak_mib_per_clip"] = got["peak_mib_per_clip"]
            figures[f"{amp}_naive_peak_mib_per_clip"] = naive["peak_mib_per_clip"]
            goal(
                ctx,
                f"{stream} {amp}: fast layout >= 2x naive Conv3d",
                2.0,
                figures[f"{amp}_fast_over_naive"],
            )
        if not ctx.cuda:
            figures["amp"] = "off: CPU autocast is slow without bf16 units, fp16 CUDA-only"
        if stream == "epam":
            amp = "bf16" if ctx.cuda else "off"
            target = f"EPAM-Net training {amp} >= 1,000 clips/s"
            goal(ctx, target, 1000.0, figures[f"{amp}_fast_clips_s"])
        figures["batch"] = ctx.sizes.speed_batch
        return figures

    run.__doc__ = f"{stream}: training clips/s, fast (frames, channels_last) vs naive Conv3d."
    return run


SPEED_AMPS = ("bf16", "fp16")


def goal(ctx: Ctx, name: str, target: float, value: float) -> None:
    ctx.goals.append({"goal": name, "target": target, "value": value, "met": value >= target})
    print(f"GOAL {name}: {value:.2f} ({'met' if value >= target else 'NOT met'})", flush=True)


def check_speed_compile(ctx: Ctx) -> dict[str, Any]:
    """torch.compile'd training step (bf16, fast layout): compile time and clips/s."""
    import torch

    speed_setup(ctx)
    figures: dict[str, Any] = {"backend": ctx.sizes.compile_backend}
    for stream in ctx.sizes.compile_speed_streams:
        torch._dynamo.reset()
        model = make_model(stream).to(ctx.device).to(memory_format=torch.channels_last)
        compiled = torch.compile(model, backend=ctx.sizes.compile_backend, dynamic=False)
        start = time.perf_counter()
        amp = "bf16" if ctx.cuda else "off"
        got = timed_steps(ctx, compiled, stream, amp)
        figures[f"{stream}_{amp}_compiled_clips_s"] = got["clips_s"]
        figures[f"{stream}_compile_and_run_s"] = time.perf_counter() - start
        figures[f"{stream}_peak_mib_per_clip"] = got["peak_mib_per_clip"]
    return figures


def loader_dataset(ctx: Ctx, render: str) -> Any:
    """The training ClipDataset over shards `epam-data synth` wrote (made on first use)."""
    from epam_model.data import ClipConfig, ClipDataset

    folder = ctx.work / "loader_data"
    if not (folder / "index.csv").is_file():
        cli(ctx, "data", "synth", str(folder), *ctx.sizes.loader_synth)
    config = ClipConfig(**ctx.sizes.loader_clip)
    return ClipDataset(folder, "synth", "train", train=True, render=render, config=config)


def check_loader(ctx: Ctx) -> dict[str, Any]:
    """Loader clips/s (loader rendering, paper clip sizes) with 1..16 workers from real shards."""
    import torch

    from epam_model.data import worker_init_fn

    dataset = loader_dataset(ctx, "loader")
    figures: dict[str, Any] = {"clip": ctx.sizes.loader_clip or "paper (3x16x224x224, 17x48x56x56)"}
    batch = 4
    for workers in ctx.sizes.loader_workers:
        clips = ctx.sizes.loader_clips_per_worker * workers + 2 * batch
        order = [i % len(dataset) for i in range(clips)]
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=batch,
            sampler=order,
            num_workers=workers,
            worker_init_fn=worker_init_fn,
            pin_memory=ctx.cuda,
        )
        iterator = iter(loader)
        next(iterator)  # workers started, first batch made: not timed
        start, count = time.perf_counter(), 0
        for item in iterator:
            count += len(item["label"])
        rate = count / (time.perf_counter() - start)
        figures[f"w{workers}_clips_s"] = rate
        figures[f"w{workers}_clips_s_per_worker"] = rate / workers
    return figures


def check_render_speed(ctx: Ctx) -> dict[str, Any]:
    """Heatmaps drawn on the device (`model_inputs`, a batch) against numpy `render` in a loader
    worker (one clip, one thread): ms per clip each."""
    import numpy as np
    import torch

    from epam_data.heatmaps import render
    from epam_model.data import model_inputs

    dataset = loader_dataset(ctx, "device")
    items = [dataset[i % len(dataset)] for i in range(ctx.sizes.render_batch)]
    batch = {k: torch.stack([item[k] for item in items]) for k in ("keypoints", "scores")}
    side = dataset.config.heatmap_size
    kp, sc = items[0]["keypoints"].numpy(), items[0]["scores"].numpy()
    loops = 5
    start = time.perf_counter()
    for _ in range(loops):
        want = render(kp, sc, (side, side), kind="joint")
    numpy_ms = 1e3 * (time.perf_counter() - start) / loops
    model_inputs(batch, ctx.device, dataset.config)  # warm-up
    sync(ctx)
    start = time.perf_counter()
    for _ in range(loops):
        _, pose = model_inputs(batch, ctx.device, dataset.config)
    sync(ctx)
    device_ms = 1e3 * (time.perf_counter() - start) / loops / len(items)
    diff = float(np.abs(pose[0].cpu().numpy().transpose(1, 0, 2, 3) - want).max())
    figures = {
        "loader_numpy_ms_per_clip": numpy_ms,
        "device_ms_per_clip": device_ms,
        "device_speedup": numpy_ms / device_ms,
        "batch": len(items),
        "max_abs": diff,
    }
    return within(figures, {"max_abs": 1e-5})


def check_extract_scaling(ctx: Ctx) -> dict[str, Any]:
    """CPU extraction across cores needs a video decoder and the BlazePose networks."""
    raise Skip(
        "needs decord/TFLite wheels (videos: decord; BlazePose: ai-edge-litert, or the .tflite "
        "files for runtime='torch'), none on the GPU machine"
    )


def check_blazepose_torch(ctx: Ctx) -> dict[str, Any]:
    """The blazepose backend's tracker with its networks in PyTorch on the device.

    Frames/s one video at a time, and with `track_videos` keeping IN_FLIGHT videos in flight (their
    crops in one landmark batch, their detector regions in one detector batch; the crops cut on
    the device, then on the CPU for comparison): the baseline of the GPU-extraction work, with up
    to 2 persons on `--frames DIR` (JPEG frames with people, e.g. a shared clip dumped as images;
    the GPU machine has no video decoder) at 1080p, and where the time goes. Needs the networks:
    $EPAM_BLAZEPOSE_MODELS with the .tflite files or their converted .pt files."""
    import numpy as np

    from epam_data.frame_folder import probe_frames, read_frame_images
    from epam_data.pose import PoseBackendError, load_backend

    if ctx.args.frames is None:
        raise Skip("give --frames DIR (JPEG frames with people) and $EPAM_BLAZEPOSE_MODELS")
    count = min(ctx.sizes.pose_frames, probe_frames(ctx.args.frames).num_frames)
    frames = upscale_1080p(read_frame_images(ctx.args.frames, np.arange(count)), ctx.sizes)
    try:
        backend = load_backend("blazepose", max_persons=2, runtime="torch", device=str(ctx.device))
    except PoseBackendError as err:
        raise Skip(str(err)) from None
    backend.estimate(frames[:2])  # warm-up: kernels chosen, caches filled
    backend.reset()
    before = dict(vars(backend.timings))
    start = time.perf_counter()
    poses = backend.estimate(frames)
    sync(ctx)
    wall = time.perf_counter() - start
    spent = {key: value - before[key] for key, value in vars(backend.timings).items()}
    batched, busy = _in_flight_frames_s(ctx, backend, frames)
    backend.device_crops = False  # the crops cut on the CPU instead, for the comparison
    cpu_crops, _ = _in_flight_frames_s(ctx, backend, frames)
    return {
        "frames": len(frames),
        "frame_hw": list(frames.shape[1:3]),
        "persons_per_frame": float(np.mean([len(p) for p in poses])),
        "frames_s": len(frames) / wall,
        f"in_flight{IN_FLIGHT}_frames_s": batched,
        f"in_flight{IN_FLIGHT}_gpu_busy_percent": busy,
        f"in_flight{IN_FLIGHT}_cpu_crops_frames_s": cpu_crops,
        "landmark_ms_per_frame": 1000 * spent["landmark_s"] / len(frames),
        "detector_ms_per_frame": 1000 * spent["detector_s"] / len(frames),
        "landmark_crops": spent["landmark_crops"],
    }


def _in_flight_frames_s(ctx: Ctx, backend: Any, frames: Any) -> tuple[float, float]:
    """Frames/s of `track_videos` with IN_FLIGHT copies of `frames` in flight (their detector
    regions and landmark crops batched; crops cut on the device unless `device_crops` is off),
    and the GPU's mean utilisation meanwhile (NaN off a GPU)."""
    from gpu_busy import GpuBusy  # scripts/, beside this file

    from epam_data.pose.blazepose import track_videos

    start = time.perf_counter()
    with GpuBusy(str(ctx.device)) as busy:
        videos = dict(track_videos(backend, [frames] * IN_FLIGHT, in_flight=IN_FLIGHT))
        sync(ctx)
    rate = IN_FLIGHT * len(frames) / (time.perf_counter() - start)
    if any(len(v) != len(frames) for v in videos.values()):
        raise Failed("track_videos lost frames")
    return rate, busy.percent


IN_FLIGHT = 8  # blazepose_torch: videos tracked at once by track_videos


def check_extract_in_flight(ctx: Ctx) -> dict[str, Any]:
    """`extract --device DEV --in-flight IN_FLIGHT` end to end: 4 x IN_FLIGHT copies of the
    `--frames DIR` clip (1080p JPEG folders: the GPU machine has no video decoder) through the real
    run loop, with 1 and 2 worker processes: frames/s over the wall time (worker start-up
    included) and the seconds of each stage summed over the samples."""
    from epam_data.extract import ExtractOptions, extract_dataset

    if ctx.args.frames is None:
        raise Skip("give --frames DIR (JPEG frames with people) and $EPAM_BLAZEPOSE_MODELS")
    videos = _frame_folder_copies(ctx, 4 * IN_FLIGHT)
    options = ExtractOptions(
        max_persons=2,
        in_flight=IN_FLIGHT,
        backend_options=(("device", str(ctx.device)), ("runtime", "torch")),
    )
    figures: dict[str, Any] = {}
    from gpu_busy import GpuBusy  # scripts/, beside this file

    for jobs in (1, 2):
        start = time.perf_counter()
        with GpuBusy(str(ctx.device)) as busy:
            report = extract_dataset(
                videos, ctx.work / f"extract_{jobs}", "generic", options=options, jobs=jobs
            )
        wall = time.perf_counter() - start
        figures[f"jobs{jobs}_gpu_busy_percent"] = busy.percent
        if report.failed or report.ok != 4 * IN_FLIGHT:
            raise Failed(f"jobs {jobs}: {report.ok} ok, failures {report.failures[:1]}")
        figures[f"jobs{jobs}_frames_s"] = report.frames / wall
        for stage, seconds in vars(report.times).items():
            figures[f"jobs{jobs}_{stage}_s"] = seconds
    figures["frames_per_video"] = report.frames // report.ok
    return figures


def _frame_folder_copies(ctx: Ctx, copies: int) -> Path:
    """`copies` frame folders of the `--frames` clip at 1080p (JPEG, written once, then linked),
    as a generic dataset of one class."""
    import numpy as np
    from PIL import Image

    from epam_data.frame_folder import probe_frames, read_frame_images

    count = min(ctx.sizes.pose_frames, probe_frames(ctx.args.frames).num_frames)
    frames = upscale_1080p(read_frame_images(ctx.args.frames, np.arange(count)), ctx.sizes)
    root = ctx.work / "extract_in" / "clips"
    first = root / "copy00"
    first.mkdir(parents=True)
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(first / f"{index + 1:06d}.jpg", quality=90)
    for copy in range(1, copies):
        folder = root / f"copy{copy:02d}"
        folder.mkdir()
        for image in sorted(first.iterdir()):
            os.link(image, folder / image.name)
    return root.parent


def check_movenet(ctx: Ctx) -> dict[str, Any]:
    """The movenet backend (CenterNet + MoveNet Thunder in torch) on the device against the CPU.

    The same frames (`--frames DIR`, at 1080p) tracked on both: the persons and their joints must
    agree (the networks are one fp32 graph; TF32 is off), and frames/s on the device with up to 2
    persons. Needs the network files: $EPAM_MOVENET_MODELS, e.g. carry
    .venv/share/epam/human-models."""
    import numpy as np

    from epam_data.frame_folder import probe_frames, read_frame_images
    from epam_data.pose import PoseBackendError, load_backend

    if ctx.args.frames is None:
        raise Skip("give --frames DIR (JPEG frames with people) and $EPAM_MOVENET_MODELS")
    strict_fp32(ctx)
    count = min(ctx.sizes.pose_frames, probe_frames(ctx.args.frames).num_frames)
    frames = upscale_1080p(read_frame_images(ctx.args.frames, np.arange(count)), ctx.sizes)
    try:
        device = load_backend("movenet", max_persons=2, device=str(ctx.device))
        cpu = load_backend("movenet", max_persons=2, device="cpu")
    except PoseBackendError as err:
        raise Skip(str(err)) from None
    reference = cpu.estimate(frames[: min(len(frames), 8)])
    device.estimate(frames[:2])  # warm-up
    device.reset()
    start = time.perf_counter()
    poses = device.estimate(frames)
    sync(ctx)
    wall = time.perf_counter() - start
    shift = max(
        (
            float(np.abs(a.keypoints - b.keypoints).max(initial=0.0))
            for a, b in zip(poses, reference)
            if len(a) == len(b)
        ),
        default=0.0,
    )
    same_persons = all(np.array_equal(a.track_ids, b.track_ids) for a, b in zip(poses, reference))
    figures = {
        "frames": len(frames),
        "frames_s": len(frames) / wall,
        "persons_per_frame": float(np.mean([len(p) for p in poses])),
        "same_persons_as_cpu": same_persons,
        "max_joint_shift_px": shift,
    }
    if not same_persons or shift > 1.0:
        raise Failed(f"movenet on {ctx.device} differs from the CPU: {short(figures)}")
    return figures


def upscale_1080p(frames: Any, sizes: Sizes) -> Any:
    """uint8 [T, h, w, 3] -> [T, 1080, 1920, 3] (bilinear, torch on the CPU); smoke: as given."""
    import torch

    if not sizes.upscale:
        return frames
    batch = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    batch = torch.nn.functional.interpolate(batch, size=(1080, 1920), mode="bilinear")
    return batch.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


CHECKS: list[tuple[str, Callable[[Ctx], dict[str, Any]]]] = [
    ("fp32_rgb", check_fp32("rgb")),
    ("fp32_pose", check_fp32("pose")),
    ("fp32_epam", check_fp32("epam")),
    ("amp_bf16", check_amp("bf16")),
    ("amp_fp16", check_amp("fp16")),
    ("channels_last", check_channels_last),
    ("render_torch", check_render),
    ("compile", check_compile),
    ("synth", check_synth),
    ("train_resume", check_resume),
    ("eval", check_eval),
    ("torchrun_ddp", check_torchrun),
    ("speed_rgb", check_speed("rgb")),
    ("speed_pose", check_speed("pose")),
    ("speed_epam", check_speed("epam")),
    ("speed_compile", check_speed_compile),
    ("speed_loader", check_loader),
    ("render_speed", check_render_speed),
    ("extract_scaling", check_extract_scaling),
    ("blazepose_torch", check_blazepose_torch),
    ("movenet", check_movenet),
    ("extract_in_flight", check_extract_in_flight),
]


# --- running and reporting ------------------------------------------------------------------------


def run_check(ctx: Ctx, name: str, check: Callable[[Ctx], dict[str, Any]]) -> dict[str, Any]:
    """One check: ok with its figures, failed with one error line, or skipped with a reason."""
    result: dict[str, Any] = {"name": name, "what": (check.__doc__ or "").split("\n")[0]}
    spent = time.monotonic() - ctx.start
    if spent > ctx.sizes.budget_s:
        return {
            **result,
            "status": "skipped",
            "reason": f"time budget {ctx.sizes.budget_s} s spent",
        }
    start = time.perf_counter()
    try:
        result.update(status="ok", figures=check(ctx))
    except Skip as err:
        result.update(status="skipped", reason=str(err))
    except Failed as err:
        result.update(status="failed", error=str(err))
    except Exception as err:  # noqa: BLE001 - any error is this check's result, not the run's end
        lines = str(err).strip().splitlines()
        result.update(status="failed", error=f"{type(err).__name__}: {lines[0] if lines else ''}")
        (ctx.work / f"{name}.traceback.txt").write_text(traceback.format_exc())
    result["seconds"] = round(time.perf_counter() - start, 2)
    return result


def video_libraries() -> dict[str, bool]:
    """Whether the driver's video libraries load: NVDEC decoding on the GPU (e.g. PyNvVideoCodec,
    the way past the host's decoding bound, BENCHMARKS.md) needs libnvcuvid, and a container sees
    it only when started with NVIDIA_DRIVER_CAPABILITIES including `video`."""
    found = {}
    for name in ("libnvcuvid.so.1", "libnvidia-encode.so.1"):
        try:
            ctypes.CDLL(name)
            found[name] = True
        except OSError:
            found[name] = False
    return found


def machine_info(ctx: Ctx) -> dict[str, Any]:
    import torch

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": str(ctx.device),
        "mode": "smoke" if ctx.args.smoke else "full",
        "sizes": asdict(ctx.sizes),
        "video_libraries": video_libraries(),
    }
    if ctx.cuda:
        props = torch.cuda.get_device_properties(ctx.device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1))
    return info


def write_report(ctx: Ctx) -> None:
    """gpu_check.json (everything) and gpu_check.md (one table), rewritten after each check."""
    data = {
        "machine": ctx.machine,
        "checks": ctx.results,
        "goals": ctx.goals,
        "seconds": round(time.monotonic() - ctx.start, 1),
    }
    (ctx.out / "gpu_check.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    m = ctx.machine
    lines = [
        "# gpu_check",
        "",
        f"{m.get('gpu', m['device'])}, torch {m['torch']}, CUDA {m['cuda']}, cuDNN {m['cudnn']}, "
        f"Python {m['python']}, {m['cpus']} CPUs, mode {m['mode']}, {data['seconds']} s",
        "",
        "video libraries (NVDEC / NVENC): "
        + ", ".join(f"{k} {'loads' if v else 'absent'}" for k, v in m["video_libraries"].items()),
        "",
        "| check | status | s | figures / error | tolerance |",
        "|---|---|---:|---|---|",
    ]
    for r in ctx.results:
        figures = dict(r.get("figures") or {})
        tolerance = figures.pop("tolerance", "")
        text = (
            r.get("error")
            or r.get("reason")
            or ", ".join(f"{k} {fmt(v)}" for k, v in figures.items())
        )
        lines.append(
            f"| {r['name']} | {r['status']} | {r.get('seconds', 0)} | {text} | {fmt(tolerance)} |"
        )
    lines += ["", "| goal | value | met |", "|---|---:|---|"]
    lines += [f"| {g['goal']} | {g['value']:.2f} | {g['met']} |" for g in ctx.goals]
    (ctx.out / "gpu_check.md").write_text("\n".join(lines) + "\n")


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {fmt(v)}" for k, v in value.items())
    return str(value).replace("|", "/")


def preflight(args: argparse.Namespace) -> Any:
    """Fail fast, with one line, when a module or the requested device is missing."""
    for name in REQUIRED:
        try:
            importlib.import_module(name)
        except ImportError as err:
            sys.exit(f"gpu_check: cannot import {name} ({err}); install it or set PYTHONPATH=.")
    import torch

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(
            f"gpu_check: --device {args.device} but torch {torch.__version__} sees no CUDA "
            "device; use --smoke (or --device cpu) for the CPU rehearsal"
        )
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", 0)
    return device


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="Folder for the report files.")
    parser.add_argument("--smoke", action="store_true", help="CPU rehearsal at tiny sizes.")
    parser.add_argument("--device", help="cuda (default) or cpu (default with --smoke).")
    parser.add_argument("--only", nargs="+", metavar="CHECK", help="Run these checks only.")
    parser.add_argument("--budget-s", type=int, help="Skip checks that start later than this.")
    parser.add_argument(
        "--frames", type=Path, help="A folder of JPEG frames with people (blazepose_torch)."
    )
    args = parser.parse_args(argv)
    args.device = args.device or ("cpu" if args.smoke else "cuda")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    device = preflight(args)
    import torch

    sizes = SMOKE if args.smoke else FULL
    if args.budget_s:
        sizes = Sizes(**{**asdict(sizes), "budget_s": args.budget_s})
    if device.type == "cpu":  # one thread: on shared cores, spinning OpenMP threads cost 10x
        torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "work"
    work.mkdir(exist_ok=True)
    ctx = Ctx(args, device, sizes, args.out, work)
    ctx.machine = machine_info(ctx)
    for name, check in CHECKS:
        if args.only and name not in args.only:
            continue
        result = run_check(ctx, name, check)
        ctx.results.append(result)
        detail = result.get("error") or result.get("reason") or short(result.get("figures", {}))
        print(f"{name}: {result['status']} ({result.get('seconds', 0)} s) {detail}", flush=True)
        write_report(ctx)
    print(
        f"wrote {args.out / 'gpu_check.json'} and gpu_check.md in "
        f"{time.monotonic() - ctx.start:.0f} s",
        flush=True,
    )
    return int(any(r["status"] == "failed" for r in ctx.results))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
