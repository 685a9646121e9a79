"""X-ShiftNet: shift semantics against a loop reference, per-clip SE, the 2D layout against the
authors' Conv3d formulation, shapes at the paper's sizes (on the meta device), backward, and
parameter counts (docs/architecture.md 11)."""

import pytest
import torch
from torch import nn

from epam_model.epamnet import load_weights
from epam_model.shift import shift_concat, shift_copy, temporal_shift, temporal_shift_clip
from epam_model.xshiftnet import (
    SqueezeExcite,
    XShiftBlock,
    build_xshiftnet,
    se_width,
    xshiftnet_pose,
    xshiftnet_rgb,
)

BUILDERS = {"rgb": xshiftnet_rgb, "pose": xshiftnet_pose}
SMALL_INPUTS = {
    "rgb": (2, 3, 4, 64, 64),
    "pose": (2, 17, 6, 16, 16),
}  # both reduce to 2 x 2 feature maps


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def shift_reference(clip: torch.Tensor, fold_div: int) -> torch.Tensor:
    """The authors' rule written as loops over [N, C, T, H, W]: first fold from t + 1, second fold
    from t - 1."""
    n_clips, channels, frames = clip.shape[:3]
    fold = channels // fold_div
    out = torch.zeros_like(clip)
    for n in range(n_clips):
        for c in range(channels):
            for t in range(frames):
                if c < fold:
                    if t + 1 < frames:
                        out[n, c, t] = clip[n, c, t + 1]
                elif c < 2 * fold:
                    if t - 1 >= 0:
                        out[n, c, t] = clip[n, c, t - 1]
                else:
                    out[n, c, t] = clip[n, c, t]
    return out


def randomize_norms(model: nn.Module) -> None:
    """Give every BN non-trivial affine parameters and running statistics (the init's zero gammas
    hide bugs)."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            shape = module.weight.shape
            module.weight.data = torch.rand(shape, generator=generator) + 0.5
            module.bias.data = torch.randn(shape, generator=generator) * 0.1
            module.running_mean = torch.randn(shape, generator=generator) * 0.1
            module.running_var = torch.rand(shape, generator=generator) + 0.5


@pytest.mark.parametrize("fold_div", [8, 4])
@pytest.mark.parametrize("frames", [1, 2, 5])
def test_shift_matches_loop_reference_in_both_layouts(fold_div: int, frames: int) -> None:
    clip = torch.randn(2, 16, frames, 3, 2)  # [N, C, T, H, W]
    before = clip.clone()
    expected = shift_reference(clip, fold_div)
    torch.testing.assert_close(temporal_shift_clip(clip, fold_div), expected, rtol=0, atol=0)
    frames_layout = clip.transpose(1, 2).reshape(-1, 16, 3, 2)  # [N*T, C, H, W]
    shifted = (
        temporal_shift(frames_layout, frames, fold_div).unflatten(0, (2, frames)).transpose(1, 2)
    )
    torch.testing.assert_close(shifted, expected, rtol=0, atol=0)
    torch.testing.assert_close(clip, before, rtol=0, atol=0)  # out of place


def test_shift_moves_exactly_one_fold_each_way() -> None:
    clip = (
        torch.arange(1, 6, dtype=torch.float32).view(1, 1, 5, 1, 1).repeat(1, 8, 1, 1, 1)
    )  # value = t + 1
    out = temporal_shift_clip(clip, 4)[0, :, :, 0, 0]  # [C, T]; fold = 2
    assert out[0].tolist() == out[1].tolist() == [2, 3, 4, 5, 0]  # from t + 1, zero at the end
    assert out[2].tolist() == out[3].tolist() == [0, 1, 2, 3, 4]  # from t - 1, zero at the start
    assert all(out[c].tolist() == [1, 2, 3, 4, 5] for c in range(4, 8))


@pytest.mark.parametrize("fold_div", [8, 4])
def test_both_shift_implementations_agree(fold_div: int) -> None:
    """shift_concat (traced by torch.export / ONNX) and shift_copy (eager, compile) against the loop
    reference."""
    clip = torch.randn(2, 16, 5, 3, 2)
    expected = shift_reference(clip, fold_div).transpose(1, 2)  # time-major
    time_major = clip.transpose(1, 2)
    torch.testing.assert_close(shift_concat(time_major, 16 // fold_div), expected, rtol=0, atol=0)
    torch.testing.assert_close(shift_copy(time_major, 16 // fold_div), expected, rtol=0, atol=0)


def test_shift_keeps_channels_last_in_forward_and_backward() -> None:
    frames = (
        torch.randn(3 * 4, 16, 5, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    )
    shifted = temporal_shift(frames, 4, 8)
    assert shifted.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(
        shifted, temporal_shift(frames.detach().contiguous(), 4, 8), rtol=0, atol=0
    )
    grad_out = torch.randn_like(shifted)  # channels_last, like the real gradients
    (grad,) = torch.autograd.grad(shifted, frames, grad_out)
    assert grad.is_contiguous(memory_format=torch.channels_last)


def test_shift_backward_is_the_adjoint() -> None:
    frames = torch.randn(2 * 3, 8, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: temporal_shift(x, 3, 4), (frames,))


def test_se_width_follows_x3d_rounding() -> None:
    assert [se_width(p) for p in (54, 108, 216, 432)] == [8, 8, 16, 32]


def test_se_gate_is_one_per_clip_and_channel() -> None:
    torch.manual_seed(0)
    se = SqueezeExcite("frames", 16, 8)
    nn.init.normal_(se.conv_reduce.weight)
    nn.init.normal_(se.conv_expand.weight)
    n_clips, frames = 3, 5
    x = torch.rand(n_clips * frames, 16, 4, 4) + 0.1
    gate = (se(x, frames) / x).unflatten(0, (n_clips, frames))  # [N, T, C, H, W]
    torch.testing.assert_close(
        gate, gate[:, :1].expand_as(gate)
    )  # the same at every frame and pixel of a clip
    torch.testing.assert_close(gate, gate[..., :1, :1].expand_as(gate))
    pooled = x.unflatten(0, (n_clips, frames)).mean((1, 3, 4))  # over T, H and W, not per frame
    expected = torch.sigmoid(se.conv_expand(torch.relu(se.conv_reduce(pooled[:, :, None, None]))))
    torch.testing.assert_close(gate[:, 0, :, 0, 0], expected[:, :, 0, 0])
    assert not torch.allclose(gate[0], gate[1])  # clips are not pooled together


@pytest.mark.parametrize("stream", ["rgb", "pose"])
@pytest.mark.parametrize("train", [False, True])
def test_frames_layout_equals_conv3d_reference(stream: str, train: bool) -> None:
    torch.manual_seed(0)
    fast = BUILDERS[stream](7, layout="frames", dropout=0.0)
    reference = BUILDERS[stream](7, layout="clip", dropout=0.0)
    randomize_norms(fast)
    report = load_weights(reference, fast.state_dict())
    assert report.clean and report.loaded == len(fast.state_dict())
    assert isinstance(reference.stages[0].blocks[0].conv_dw, nn.Conv3d)
    assert reference.stages[0].blocks[0].conv_dw.weight.shape[2:] == (1, 3, 3)
    fast.train(train).double()  # float64: train-mode BN over 2 x 2 maps
    reference.train(train).double()  # would magnify float32 rounding
    x = torch.randn(*SMALL_INPUTS[stream], dtype=torch.float64)
    torch.testing.assert_close(
        fast.forward_features(x), reference.forward_features(x), rtol=1e-9, atol=1e-10
    )
    torch.testing.assert_close(fast(x), reference(x), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("stream", ["rgb", "pose"])
def test_channels_last_gives_the_same_logits(stream: str) -> None:
    torch.manual_seed(0)
    model = BUILDERS[stream](5, dropout=0.0).eval()
    randomize_norms(model)
    x = torch.randn(*SMALL_INPUTS[stream])
    expected = model(x)
    torch.testing.assert_close(
        model.to(memory_format=torch.channels_last)(x), expected, rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize(
    ("stream", "channels", "stage_shapes"),
    [
        (
            "rgb",
            3,
            [(24, 112, 112), (24, 56, 56), (48, 28, 28), (96, 14, 14), (192, 7, 7), (432, 7, 7)],
        ),
        ("pose", 17, [(24, 56, 56), (24, 28, 28), (48, 14, 14), (96, 7, 7), (216, 7, 7)]),
        ("pose", 34, [(24, 56, 56), (24, 28, 28), (48, 14, 14), (96, 7, 7), (216, 7, 7)]),
    ],
)
def test_shapes_at_paper_sizes(
    stream: str, channels: int, stage_shapes: list[tuple[int, ...]]
) -> None:
    """docs/architecture.md 5 / 6 stage tables, checked on the meta device (shapes only, nothing
    computed)."""
    frames, size = (16, 224) if stream == "rgb" else (48, 56)
    with torch.device("meta"):
        model = BUILDERS[stream](60, in_channels=channels).eval()
        x = torch.empty(2, channels, frames, size, size)
    shapes = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape)))
        for m in (model.stem, *model.stages, model.conv5)
    ]
    features = model.forward_features(x)
    for hook in hooks:
        hook.remove()
    assert shapes == [
        (2 * frames, *shape) for shape in stage_shapes
    ]  # frames layout: [N*T, C, H, W]
    assert features.shape == (2, stage_shapes[-1][0], frames, 7, 7)
    assert model.forward_head(features).shape == (2, 60)


@pytest.mark.parametrize(("stream", "channels"), [("rgb", 3), ("pose", 17), ("pose", 34)])
def test_backward_reaches_every_parameter(stream: str, channels: int) -> None:
    torch.manual_seed(0)
    model = BUILDERS[stream](4, in_channels=channels)
    randomize_norms(model)  # zero-init gammas would block the branches
    shape = (2, channels, *SMALL_INPUTS[stream][2:])
    loss = nn.functional.cross_entropy(model(torch.randn(shape)), torch.tensor([1, 3]))
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_init_starts_every_block_as_identity() -> None:
    model = xshiftnet_pose(0)
    blocks = [m for m in model.modules() if isinstance(m, XShiftBlock)]
    assert len(blocks) == 5 + 11 + 7
    assert all(not b.bn3.weight.detach().any() for b in blocks)
    assert (
        sum(b.se is not None for b in blocks) == 3 + 6 + 4
    )  # SE in blocks 0, 2, 4, ... of each stage


@pytest.mark.parametrize(
    ("stream", "num_classes", "expected"),
    [
        ("rgb", 0, 1_980_030),
        ("rgb", 60, 2_006_010),
        ("rgb", 120, 1_980_030 + 433 * 120),
        ("pose", 0, 519_580),
        ("pose", 60, 532_600),
        ("pose", 51, 519_580 + 217 * 51),
    ],
)
def test_parameter_counts_match_paper(stream: str, num_classes: int, expected: int) -> None:
    model = BUILDERS[stream](num_classes)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_builder_is_configurable_and_rejects_bad_layouts() -> None:
    tiny = build_xshiftnet(
        in_channels=2, depths=(1, 2), widths=(4, 8), stem_stride=1, num_classes=3
    )
    assert tiny(torch.randn(1, 2, 3, 8, 8)).shape == (1, 3)
    assert tiny.num_features == int(2.25 * 8)
    with pytest.raises(ValueError, match="layout"):
        build_xshiftnet(in_channels=3, layout="nchw")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one entry per stage"):
        build_xshiftnet(in_channels=3, depths=(1, 2), widths=(4,))
