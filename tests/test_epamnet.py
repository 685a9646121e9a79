"""EPAM-Net: build_model for every stream and heatmap variant, attention, fusion, checkpoint
hand-over with its report, the model-info figures of docs/architecture.md 11, a tiny overfit,
torch.compile and ONNX export."""

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from epam_data.errors import EpamError
from epam_model import build_model
from epam_model.attention import PoseGuidedAttention, align_pose_time
from epam_model.complexity import measure_costs, model_info
from epam_model.epamnet import (
    CheckpointError,
    EpamNet,
    EpamOutput,
    ModelConfigError,
    load_stream_weights,
    load_weights,
    read_state_dict,
)
from epam_model.xshiftnet import build_xshiftnet

RGB_SMALL = (2, 3, 4, 64, 64)  # -> 2 x 2 features
POSE_SMALL = (
    2,
    17,
    12,
    16,
    16,
)  # -> 2 x 2 features, 12 pose steps for 4 RGB frames (stride 3, as 48 / 16)
TINY_RGB = (2, 3, 4, 32, 32)  # tiny_epam: -> 4 x 4, as POSE_SMALL


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def tiny_epam(num_classes: int = 3, layout: str = "frames") -> EpamNet:
    """A two-stage EPAM-Net with the real modules, small enough to compile or export in seconds.

    Inputs TINY_RGB and POSE_SMALL; BN and classifier weights are randomised so the residual
    branches count.
    """
    rgb = build_xshiftnet(
        in_channels=3, depths=(1, 1), widths=(8, 16), num_classes=num_classes, layout=layout
    )
    pose = build_xshiftnet(
        in_channels=17,
        depths=(1, 1),
        widths=(8, 16),
        stem_stride=1,
        fold_div=4,
        num_classes=num_classes,
        layout=layout,
    )
    model = EpamNet(rgb, pose, PoseGuidedAttention(layout))
    generator = torch.Generator().manual_seed(1)
    for (
        module
    ) in model.modules():  # non-trivial BN, or the zero-init gammas hide the residual branches
        if isinstance(module, nn.BatchNorm2d):
            module.weight.data = torch.rand(module.weight.shape, generator=generator) + 0.5
            module.running_var = torch.rand(module.weight.shape, generator=generator) + 0.5
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.5, generator=generator)
    return model


@pytest.mark.parametrize("pose_channels", [17, 34])
def test_epam_returns_two_logit_tensors_and_their_sum(pose_channels: int) -> None:
    model = build_model("epam", 5, pose_channels=pose_channels).eval()
    out = model(torch.randn(*RGB_SMALL), torch.randn(2, pose_channels, *POSE_SMALL[2:]))
    assert isinstance(out, EpamOutput) and isinstance(out, tuple)
    assert out.rgb.shape == out.pose.shape == (2, 5)
    torch.testing.assert_close(out.fused(), out.rgb + out.pose)


def test_epam_output_shapes_at_paper_sizes() -> None:
    with torch.device("meta"):
        model = build_model("epam", 60).eval()
        out = model(torch.empty(2, 3, 16, 224, 224), torch.empty(2, 17, 48, 56, 56))
    assert out.rgb.shape == out.pose.shape == (2, 60)


@pytest.mark.parametrize(
    ("stream", "shape"), [("rgb", RGB_SMALL), ("pose", POSE_SMALL), ("pose", (2, 34, 6, 16, 16))]
)
def test_single_streams(stream: str, shape: tuple[int, ...]) -> None:
    model = build_model(stream, 7, pose_channels=shape[1] if stream == "pose" else 17).eval()
    assert model(torch.randn(*shape)).shape == (2, 7)


def test_epam_backward_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    model = build_model("epam", 4)
    for module in model.modules():  # undo the zero-init gammas of the blocks
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.5, 1.5)
    out = model(torch.randn(*RGB_SMALL), torch.randn(*POSE_SMALL))
    labels = torch.tensor([0, 3])
    (
        nn.functional.cross_entropy(out.rgb, labels) + nn.functional.cross_entropy(out.pose, labels)
    ).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_attention_aligns_pose_steps_to_rgb_frames() -> None:
    pose = torch.arange(48.0).view(1, 1, 48, 1, 1).expand(2, 3, 48, 7, 7)  # value = pose step
    assert align_pose_time(pose, 16)[0, 0, :, 0, 0].tolist() == list(range(0, 48, 3))
    assert align_pose_time(pose, 12)[0, 0, :, 0, 0].tolist() == list(
        range(0, 48, 4)
    )  # derived, not hard-coded
    assert align_pose_time(pose, 48)[0, 0, :, 0, 0].tolist() == list(range(48))
    with pytest.raises(ValueError, match="fewer than"):
        align_pose_time(pose[:, :, :8], 16)


@pytest.mark.parametrize("layout", ["frames", "clip"])
def test_attention_maps_and_guidance(layout: str) -> None:
    torch.manual_seed(0)
    attention = PoseGuidedAttention(layout).train()
    assert sum(p.numel() for p in attention.parameters()) == 107  # 98 conv + 2 BN + 7 conv1d
    rgb = torch.randn(2, 432, 16, 7, 7)
    pose = torch.randn(2, 216, 48, 7, 7)
    maps = attention.attention_maps(align_pose_time(pose, 16))
    assert maps.spatial.shape == maps.combined.shape == (2, 1, 16, 7, 7)
    assert maps.temporal.shape == (2, 1, 16, 1, 1)
    for values in maps:
        assert float(values.detach().min()) >= 0 and float(values.detach().max()) <= 1
    torch.testing.assert_close(maps.combined, maps.spatial * maps.temporal)
    torch.testing.assert_close(attention(rgb, pose), rgb * (1 + maps.combined))
    with pytest.raises(ValueError, match="feature map"):
        attention(rgb, pose[..., :5, :5])


def test_attention_layouts_agree() -> None:
    torch.manual_seed(0)
    fast, reference = PoseGuidedAttention("frames").eval(), PoseGuidedAttention("clip").eval()
    assert load_weights(reference, fast.state_dict()).clean
    rgb, pose = torch.randn(2, 8, 4, 5, 5), torch.randn(2, 6, 12, 5, 5)
    torch.testing.assert_close(fast(rgb, pose), reference(rgb, pose))


@pytest.mark.parametrize("num_classes", [60, 120, 51, 31, 19])
def test_epam_parameter_count_matches_paper(num_classes: int) -> None:
    model = build_model("epam", num_classes)
    assert (
        sum(p.numel() for p in model.parameters()) == 2_499_717 + 650 * num_classes
    )  # docs/architecture.md 11


def test_model_info_reproduces_paper_figures() -> None:
    info = model_info("epam", 60)
    parts = {part.name: part for part in info.parts}
    assert [parts[name].params for name in ("RGB stream", "Pose stream", "Attention")] == [
        2_006_010,
        532_600,
        107,
    ]
    assert info.total.params == 2_538_717
    assert info.total.params - info.head_params == 2_499_717
    assert round(parts["RGB stream"].macs / 1e9, 3) == 4.262  # docs/architecture.md 11
    assert round(parts["Pose stream"].macs / 1e9, 3) == 3.356
    assert round(info.total.macs / 1e9, 2) == 7.62
    assert round(parts["RGB stream"].mmcv_flops / 1e9, 3) == 4.499
    assert round(parts["Pose stream"].mmcv_flops / 1e9, 3) == 3.576
    assert round(info.total.mmcv_flops / 1e9, 2) == 8.08  # the paper's 8.1
    assert "other" not in parts


def test_macs_agree_with_flop_counter_mode() -> None:
    """Our per-part counter and torch's FlopCounterMode see the same conv and linear work."""
    with torch.device("meta"):
        model = build_model("epam", 60).eval()
        inputs = (torch.empty(1, 3, 16, 224, 224), torch.empty(1, 17, 48, 56, 56))
    costs = measure_costs(model, inputs, {"rgb": "rgb", "pose": "pose", "attention": "attention"})
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*inputs)
    assert sum(macs for macs, _ in costs.values()) * 2 == counter.get_total_flops()


def test_build_model_rejects_bad_options() -> None:
    with pytest.raises(ModelConfigError, match="unknown stream"):
        build_model("flow", 60)
    with pytest.raises(EpamError, match="pose_channels"):
        build_model("pose", 60, pose_channels=18)
    with pytest.raises(ValueError, match="at least 1 class"):
        build_model("epam", 0)


def test_stream_checkpoints_load_into_epam_halves(tmp_path) -> None:
    torch.manual_seed(0)
    rgb, pose, epam = build_model("rgb", 60), build_model("pose", 60), build_model("epam", 60)
    path = tmp_path / "pose.pt"
    torch.save(
        {"model": {f"module.{k}": v for k, v in pose.state_dict().items()}, "epoch": 3}, path
    )  # DDP keys
    rgb_report = load_stream_weights(epam, "rgb", rgb.state_dict())
    pose_report = load_stream_weights(epam, "pose", path)
    assert rgb_report.clean and pose_report.clean
    assert rgb_report.loaded == len(rgb.state_dict()) and pose_report.source == str(path)
    for name, value in rgb.state_dict().items():
        torch.testing.assert_close(epam.rgb.state_dict()[name], value, rtol=0, atol=0)
    torch.testing.assert_close(epam.pose.head.fc.weight, pose.head.fc.weight, rtol=0, atol=0)


def test_checkpoint_problems_are_reported_not_ignored(caplog) -> None:
    epam = build_model("epam", 60)
    state = build_model("rgb", 120).state_dict()  # an NTU120 head
    del state["conv5.bn.running_var"]
    state["head.extra.weight"] = torch.zeros(1)
    head_before = epam.rgb.head.fc.weight.clone()
    with caplog.at_level("WARNING"):
        report = load_stream_weights(epam, "rgb", state)
    assert report.missing == ("conv5.bn.running_var",)
    assert report.unexpected == ("head.extra.weight",)
    assert [line.split(":")[0] for line in report.mismatched] == ["head.fc.weight", "head.fc.bias"]
    assert not report.clean and "unexpected (ignored): head.extra.weight" in report.lines()[2]
    # one warning line with the counts, not one per key (a foreign file has hundreds)
    assert len(caplog.records) == 1
    assert "1 missing, 1 unexpected, 2 with another shape" in caplog.text
    assert report.backbone_gaps == ("conv5.bn.running_var",)  # the head's new size is no gap
    torch.testing.assert_close(
        epam.rgb.head.fc.weight, head_before, rtol=0, atol=0
    )  # kept, and said so
    with pytest.raises(CheckpointError, match="1 missing, 1 unexpected, 2 with another shape"):
        load_stream_weights(epam, "rgb", state, strict=True)


def test_read_state_dict_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        read_state_dict(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt: cannot read"):
        read_state_dict(tmp_path / "junk.pt")
    torch.save({"epoch": 3}, tmp_path / "meta.pt")
    with pytest.raises(CheckpointError, match="holds no state dict"):
        read_state_dict(tmp_path / "meta.pt")


def test_tiny_model_overfits_a_few_clips() -> None:
    torch.manual_seed(0)
    model = build_model("epam", 4, dropout=0.0)
    rgb, pose = torch.randn(4, 3, 4, 32, 32), torch.randn(4, 17, 12, 8, 8)  # both reduce to 1 x 1
    labels = torch.tensor([0, 1, 2, 3])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        out = model(rgb, pose)
        loss = nn.functional.cross_entropy(out.rgb, labels) + nn.functional.cross_entropy(
            out.pose, labels
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0], losses
    assert (model.eval()(rgb, pose).fused().argmax(1) == labels).all()


def test_bfloat16_autocast_forward() -> None:
    model = tiny_epam().eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(*TINY_RGB), torch.randn(*POSE_SMALL))
    assert torch.isfinite(out.fused().float()).all()


# Vector widths for inductor's CPU code: None is this CPU's own (512 on AVX-512 machines); 256 is
# the code every AVX2 CPU gets, where torch 2.13 mis-compiled the slice-write shift into NaN
# (scripts/inductor_shift_repro.py); 1 is scalar.
SIMD_WIDTHS = [
    pytest.param(None, id="native"),
    pytest.param(256, id="simd256"),
    pytest.param(1, id="scalar"),
]


def compiled_call(
    model: nn.Module, simdlen: int | None, *inputs: torch.Tensor, backward: bool = False
) -> EpamOutput:
    """model(*inputs) through torch.compile with inductor's vector width set to `simdlen`; with
    backward=True also backpropagates `weighted_sum` (compiling the backward graph under the same
    setting)."""
    from torch._inductor import config as inductor_config

    torch._dynamo.reset()
    with inductor_config.patch({"cpp.simdlen": simdlen}):
        out = torch.compile(model)(*inputs)
        if backward:
            weighted_sum(out).backward()
    return out


def weighted_sum(out: EpamOutput | torch.Tensor) -> torch.Tensor:
    """A loss whose gradient differs per logit, so a swapped or zeroed logit shows in the
    gradients."""
    logits = torch.cat(list(out), 1) if isinstance(out, tuple) else out
    return (logits * torch.linspace(-1, 1, logits.numel()).view_as(logits)).sum()


@pytest.mark.slow
@pytest.mark.parametrize("simdlen", SIMD_WIDTHS)
def test_torch_compile_matches_eager(simdlen: int | None) -> None:
    torch.manual_seed(0)
    model = tiny_epam().eval()
    rgb, pose = torch.randn(*TINY_RGB), torch.randn(*POSE_SMALL)
    expected = model(rgb, pose)
    out = compiled_call(model, simdlen, rgb, pose)
    torch.testing.assert_close(out.rgb, expected.rgb, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.pose, expected.pose, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("part", "simdlen"),
    [("epam", None), ("epam", 256), ("rgb", 256), ("pose", 256)],
    ids=["epam-native", "epam-simd256", "rgb-simd256", "pose-simd256"],
)
def test_torch_compile_training_step_matches_eager(part: str, simdlen: int | None) -> None:
    """Training mode (batch statistics), forward and backward: logits, every gradient and the BN
    running stats. Dropout is off: inductor draws its own random numbers."""
    import copy

    torch.manual_seed(0)
    model = tiny_epam().train()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.eval()
    rgb, pose = torch.randn(*TINY_RGB), torch.randn(*POSE_SMALL)
    model, inputs = {
        "epam": (model, (rgb, pose)),
        "rgb": (model.rgb, (rgb,)),
        "pose": (model.pose, (pose,)),
    }[part]
    twin = copy.deepcopy(model)
    expected = twin(*inputs)
    weighted_sum(expected).backward()
    out = compiled_call(model, simdlen, *inputs, backward=True)
    for got, want in zip(
        out if part == "epam" else [out], expected if part == "epam" else [expected]
    ):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    for (name, param), twin_param in zip(model.named_parameters(), twin.parameters()):
        assert param.grad is not None, name
        torch.testing.assert_close(param.grad, twin_param.grad, rtol=1e-3, atol=1e-5, msg=name)
    for (name, buffer), twin_buffer in zip(model.named_buffers(), twin.buffers()):
        torch.testing.assert_close(buffer, twin_buffer, rtol=1e-4, atol=1e-5, msg=name)


def test_onnx_export_matches_pytorch(tmp_path) -> None:
    pytest.importorskip("onnxscript")
    onnxruntime = pytest.importorskip("onnxruntime")
    from epam_model.export import export_onnx

    model = tiny_epam().eval()
    report = export_onnx(
        model, tmp_path / "tiny.onnx", rgb_shape=TINY_RGB[1:], pose_shape=POSE_SMALL[1:]
    )
    assert report.input_names == ("rgb", "pose") and report.output_names == (
        "rgb_logits",
        "pose_logits",
    )
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-4
    session = onnxruntime.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    rgb, pose = torch.randn(3, *TINY_RGB[1:]), torch.randn(3, *POSE_SMALL[1:])  # another batch size
    got = session.run(None, {"rgb": rgb.numpy(), "pose": pose.numpy()})
    with torch.no_grad():
        expected = model(rgb, pose)
    torch.testing.assert_close(torch.from_numpy(got[0]), expected.rgb, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.from_numpy(got[1]), expected.pose, rtol=1e-4, atol=1e-5)
