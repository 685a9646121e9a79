"""torch.compile (inductor, CPU) returns NaN for a TSM temporal shift written as empty_like + slice
writes.

Stand-alone, torch only (no epam import): two conv -> BN -> ReLU -> shift stems in one compiled
graph, as in EpamNet's RGB and pose streams. Seen with torch 2.13.0+cpu: NaN with 256-bit vectors
(the code inductor makes on an AVX2 CPU, forced here with `cpp.simdlen`), right with 512-bit and
scalar code, and right with one stem alone. epam_model.shift therefore traces the shift as pad + cat
under torch.compile. Run it after a torch upgrade:

    python scripts/inductor_shift_repro.py 256   # 256: AVX2 code; 512: AVX-512 code; 1: scalar
"""

import sys

import torch
import torch._inductor.config as cfg

cfg.cpp.simdlen = int(sys.argv[1]) if len(sys.argv) > 1 else None


def shift(
    x: torch.Tensor, fold: int
) -> torch.Tensor:  # x: [N, T, C, H, W]; zeros enter at the clip ends
    out = torch.empty_like(x)
    out[:, :-1, :fold] = x[:, 1:, :fold]
    out[:, -1:, :fold] = 0
    out[:, 1:, fold : 2 * fold] = x[:, :-1, fold : 2 * fold]
    out[:, :1, fold : 2 * fold] = 0
    out[:, :, 2 * fold :] = x[:, :, 2 * fold :]
    return out


class Shift(torch.autograd.Function):
    """epam's format-preserving shift: its backward is the shift the other way."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, fold: int) -> torch.Tensor:
        ctx.fold = fold
        return shift(x, fold)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return shift(grad.flip(1), ctx.fold).flip(1), None  # time reversed: the adjoint


class Stem(torch.nn.Module):
    """conv -> BN -> ReLU -> temporal shift, as the first block of a TSM network."""

    def __init__(self, channels: int, stride: int, frames: int, fold_div: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, 8, 3, stride, 1, bias=False)
        self.bn = torch.nn.BatchNorm2d(8)
        self.frames, self.fold_div = frames, fold_div

    def forward(self, frames: torch.Tensor) -> torch.Tensor:  # frames [N*T, C, H, W]
        y = torch.relu(self.bn(self.conv(frames)))
        return Shift.apply(y.unflatten(0, (-1, self.frames)), y.shape[1] // self.fold_div).flatten(
            0, 1
        )


class TwoStreams(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rgb, self.pose = Stem(3, 2, 4, 8), Stem(17, 1, 12, 4)

    def forward(self, rgb: torch.Tensor, pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rgb(rgb), self.pose(pose)


torch.manual_seed(0)
inputs = torch.randn(8, 3, 32, 32), torch.randn(24, 17, 16, 16)
model = TwoStreams().eval()
expected = model(*inputs)
for name, got, want in zip(("rgb", "pose"), torch.compile(model)(*inputs), expected):
    print(
        f"torch {torch.__version__} simdlen {cfg.cpp.simdlen} {name}: NaN "
        f"{got.isnan().sum().item()} of "
        f"{got.numel()}, max |diff| {(got - want).abs().nan_to_num(float('inf')).max().item()}"
    )
