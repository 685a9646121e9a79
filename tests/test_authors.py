"""The authors' checkpoints: key names and shapes as their code produces them (written out below
from the structure of their model at commit 32267f1), stored as they store them (DDP's `module.`,
`model_state_dict` / `state_dict` wrappers, Conv3d kernels).

State dicts are built with those names and random values; the converter must place every tensor
(value for value), the result must load strictly into EPAM-Net, `epam-train convert` must write a
checkpoint that `eval` and `--init-*` take, and foreign files must be refused.
"""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from epam_model.authors import convert_authors_state_dict, stream_state_dict
from epam_model.checkpoints import build_from_checkpoint, load_checkpoint
from epam_model.cli import app
from epam_model.epamnet import CheckpointError, build_model, load_weights

runner = CliRunner()

# The authors' X-ShiftNet stages as their code builds them: (blocks, Cout, inner width P, SE width).
AUTHORS_LAYERS = {
    "rgb": ((3, 24, 54, 8), (5, 48, 108, 8), (11, 96, 216, 16), (7, 192, 432, 32)),
    "pose": ((5, 24, 54, 8), (11, 48, 108, 8), (7, 96, 216, 16)),
}
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def conv_module(name: str, shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """An mmcv ConvModule: a bias-free Conv3d and its BN."""
    out = shape[0]
    return {f"{name}.conv.weight": shape} | {
        f"{name}.bn.{leaf}": (() if leaf == "num_batches_tracked" else (out,)) for leaf in BN
    }


def authors_block(name: str, index: int, cin: int, cout: int, inner: int, se: int) -> dict:
    """Block `index` of a layer, in the authors' key order: downsample (block 0 only), conv1,
    conv2 (depthwise), conv3, and SE in even blocks (1x1x1 Conv3d with bias)."""
    keys = conv_module(f"{name}.downsample", (cout, cin, 1, 1, 1)) if index == 0 else {}
    keys |= conv_module(f"{name}.conv1", (inner, cin if index == 0 else cout, 1, 1, 1))
    keys |= conv_module(f"{name}.conv2", (inner, 1, 1, 3, 3))
    keys |= conv_module(f"{name}.conv3", (cout, inner, 1, 1, 1))
    if index % 2 == 0:
        keys |= {
            f"{name}.se_module.fc1.weight": (se, inner, 1, 1, 1),
            f"{name}.se_module.fc1.bias": (se,),
            f"{name}.se_module.fc2.weight": (inner, se, 1, 1, 1),
            f"{name}.se_module.fc2.bias": (inner,),
        }
    return keys


def authors_shapes_of(num_classes: int = 60) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the authors' fused model (RGBPoseAttentionActionRecognizer), written out from
    the structure of their code (https://github.com/ahmed-nady/Multimodal-Action-Recognition)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for stream, in_channels in (("rgb", 3), ("pose", 17)):
        backbone = f"{stream}_backbone"
        shapes |= conv_module(f"{backbone}.conv1_s", (24, in_channels, 1, 3, 3))
        cin = 24
        for layer, (blocks, cout, inner, se) in enumerate(AUTHORS_LAYERS[stream], start=1):
            for index in range(blocks):
                shapes |= authors_block(
                    f"{backbone}.layer{layer}.{index}", index, cin, cout, inner, se
                )
            cin = cout
        width = AUTHORS_LAYERS[stream][-1][2]
        shapes |= conv_module(f"{backbone}.conv5", (width, cin, 1, 1, 1))
        shapes[f"{stream}_cls_head.fc_cls.weight"] = (num_classes, width)
        shapes[f"{stream}_cls_head.fc_cls.bias"] = (num_classes,)
    shapes |= conv_module("attention_module.spatial", (1, 2, 1, 7, 7))
    shapes["attention_module.conv_temporal_attention.weight"] = (1, 1, 7)
    return shapes


@pytest.fixture(scope="module")
def authors_shapes() -> dict[str, tuple[int, ...]]:
    shapes = authors_shapes_of(60)
    assert len(shapes) == 1071
    return shapes


def authors_state(shapes: dict[str, tuple[int, ...]], prefix: str = "") -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[prefix + key] = torch.tensor(7, dtype=torch.int64)
        elif key.endswith("running_var"):
            state[prefix + key] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[prefix + key] = torch.randn(shape, generator=generator)
    return state


def test_every_tensor_of_the_fused_model_finds_its_place(authors_shapes):
    theirs = authors_state(authors_shapes)
    ours, stream = convert_authors_state_dict(theirs)
    assert stream == "epam" and len(ours) == 1071
    model = build_model("epam", 60)
    load_weights(model, ours, strict=True)  # every key and shape, nothing left over
    weights = model.state_dict()
    # spot checks, value for value, across stems, blocks, SE, shortcut, heads and attention
    pairs = {
        "rgb_backbone.conv1_s.conv.weight": "rgb.stem.conv.weight",
        "rgb_backbone.layer1.0.downsample.bn.running_var": (
            "rgb.stages.0.blocks.0.shortcut.bn.running_var"
        ),
        "rgb_backbone.layer2.3.conv1.bn.bias": "rgb.stages.1.blocks.3.bn1.bias",
        "rgb_backbone.layer2.3.conv2.bn.bias": "rgb.stages.1.blocks.3.bn2.bias",
        "rgb_backbone.layer4.6.conv3.conv.weight": "rgb.stages.3.blocks.6.conv_pwl.weight",
        "pose_backbone.layer2.10.se_module.fc2.bias": "pose.stages.1.blocks.10.se.conv_expand.bias",
        "pose_backbone.layer3.0.conv2.conv.weight": "pose.stages.2.blocks.0.conv_dw.weight",
        "pose_cls_head.fc_cls.weight": "pose.head.fc.weight",
        "attention_module.spatial.conv.weight": "attention.spatial_conv.weight",
        "attention_module.spatial.bn.weight": "attention.spatial_bn.weight",
        "attention_module.conv_temporal_attention.weight": "attention.temporal_conv.weight",
    }
    for their_key, our_key in pairs.items():
        expected = theirs[their_key]
        expected = expected.squeeze(2) if expected.dim() == 5 else expected
        torch.testing.assert_close(weights[our_key], expected, rtol=0, atol=0, msg=our_key)


@pytest.mark.parametrize("wrapper", ["model_state_dict", "state_dict", None])
def test_convert_writes_a_checkpoint_eval_and_init_take(authors_shapes, tmp_path, wrapper):
    theirs = authors_state(authors_shapes, prefix="module.")  # saved from DistributedDataParallel
    path = tmp_path / "epam_ntu60.pth"
    torch.save({wrapper: theirs, "epoch": 4} if wrapper else theirs, path)
    classes = tmp_path / "classes.csv"
    classes.write_text("label,name\n" + "".join(f"{i},action {i}\n" for i in range(60)))
    out = tmp_path / "converted.pt"
    result = runner.invoke(
        app, ["convert", str(path), "--out", str(out), "--classes", str(classes)]
    )
    assert result.exit_code == 0, result.output
    assert "epam, 60 classes, 1071 tensors" in result.output
    payload = load_checkpoint(out)
    assert payload["class_names"][59] == "action 59"
    model = build_from_checkpoint(payload)
    torch.testing.assert_close(
        model.rgb.head.fc.bias, theirs["module.rgb_cls_head.fc_cls.bias"], rtol=0, atol=0
    )
    pose_part = stream_state_dict(path, "pose")  # what --init-pose reads from their file
    load_weights(build_model("pose", 60), pose_part, strict=True)


def test_a_stage1_pose_file_converts_to_the_pose_stream(authors_shapes, tmp_path):
    pose = {
        key.replace("pose_backbone.", "backbone.").replace("pose_cls_head.", "cls_head."): value
        for key, value in authors_state(authors_shapes).items()
        if key.startswith("pose_")
    }
    ours, stream = convert_authors_state_dict(pose)
    assert stream == "pose" and len(ours) == 498
    load_weights(build_model("pose", 60), ours, strict=True)


def test_files_that_are_not_epam_net_are_refused(authors_shapes, tmp_path):
    theirs = authors_state(authors_shapes)
    theirs["rgb_backbone.conv1_t.conv.weight"] = torch.zeros(24, 1, 5, 1, 1)  # plain X3D's stem
    with pytest.raises(CheckpointError, match="1 keys are not EPAM-Net's.*conv1_t"):
        convert_authors_state_dict(theirs)
    ours = tmp_path / "ours.pt"
    torch.save(build_model("pose", 4).state_dict(), ours)
    result = runner.invoke(app, ["convert", str(ours), "--out", str(tmp_path / "x.pt")])
    assert result.exit_code == 1 and "needs no conversion" in result.output
    assert not (tmp_path / "x.pt").exists()
    path = tmp_path / "epam.pth"
    torch.save(authors_state(authors_shapes), path)
    result = runner.invoke(
        app, ["convert", str(path), "--out", str(tmp_path / "y.pt"), "--classes", "51"]
    )
    assert (
        result.exit_code == 1 and "--classes 51, but the file's classifier has 60" in result.output
    )


def test_our_checkpoint_round_trips_through_the_authors_names(authors_shapes):
    """Our weights renamed to the authors' (by the listing's order, which matches ours module for
    module) convert back to exactly our weights."""
    generator = torch.Generator().manual_seed(1)
    ours = {  # random values: at init every BN is 1 / 0, and swapped BNs would go unseen
        key: torch.randn(value.shape, generator=generator) if value.is_floating_point() else value
        for key, value in build_model("epam", 60).state_dict().items()
    }
    order = {"rgb": [], "pose": [], "attention": []}
    for key in ours:
        order[key.split(".")[0]].append(key)
    theirs_keys = {"rgb": [], "pose": [], "attention": []}
    for key in authors_shapes:
        theirs_keys["attention" if key.startswith("attention") else key.split("_")[0]].append(key)
    renamed = {}
    for part in order:
        for our_key, their_key in zip(sorted_like(order[part]), theirs_keys[part], strict=True):
            value = ours[our_key]
            renamed[their_key] = value.reshape(authors_shapes[their_key]) if value.dim() else value
    back, _ = convert_authors_state_dict(renamed)
    for key, value in ours.items():
        torch.testing.assert_close(back[key], value, rtol=0, atol=0, msg=key)


def sorted_like(keys: list[str]) -> list[str]:
    """Our keys in the authors' order: within a block, shortcut (downsample) first, SE last; the
    head (cls_head) after conv5, as in their listing."""
    rank = {"shortcut": 0, "conv_pw": 1, "bn1": 2, "conv_dw": 3, "bn2": 4, "conv_pwl": 5, "bn3": 6}

    def key_of(item: tuple[int, str]) -> tuple:
        position, key = item
        parts = key.split(".")
        if "blocks" in parts:
            at = parts.index("blocks")
            part = parts[at + 2]
            return (1, int(parts[at - 1]), int(parts[at + 1]), rank.get(part, 9), position)
        return ({"stem": 0, "conv5": 2, "head": 3}.get(parts[1], 4), 0, 0, 0, position)

    return [key for _, key in sorted(enumerate(keys), key=key_of)]


def test_eval_and_init_take_an_authors_file_directly(authors_shapes, tmp_path):
    """A stage-1 pose file of the authors' (4 classes here) is scored by `eval` and starts a run
    with `--init-pose`, converted on the fly."""
    from epam_data.synth import make_synth_dataset

    data = make_synth_dataset(tmp_path / "synth", classes=4, samples=8, frames=12, seed=0)
    pose = {}
    for key, value in authors_state(authors_shapes).items():
        if key.startswith("pose_"):
            key = key.replace("pose_backbone.", "backbone.").replace("pose_cls_head.", "cls_head.")
            pose[key] = value[:4] if key.startswith("cls_head.") else value
    path = tmp_path / "pose_epoch_235.pth"
    torch.save({"state_dict": pose, "meta": {}}, path)
    args = ["eval", str(path), str(data), "--protocol", "synth", "--workers", "0"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "scores")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "scores" / "metrics.json").is_file()
    run = tmp_path / "run"
    train = ["train", str(data), "--protocol", "synth", "--stream", "pose", "--out", str(run)]
    train += ["--init-pose", str(path), "--epochs", "1", "--pose-frames", "8", "--heatmap-size"]
    result = runner.invoke(app, [*train, "16", "--workers", "0", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "0 missing, 0 unexpected, 0 with another shape" in result.output


def test_converted_weights_give_the_authors_logits():
    """The fidelity check names and shapes cannot give: the authors' network (transcribed in
    tests/authors_reference.py from their code's description, Conv3d and their key names) and
    epam's EpamNet with the converted weights compute the same logits, float error only."""
    from authors_reference import AuthorsEpamNet

    torch.manual_seed(0)
    theirs = AuthorsEpamNet(classes=5).eval()
    with torch.no_grad():  # trained-like weights: every BN gamma, beta and running stat random
        for name, tensor in theirs.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith(("bn.weight", "running_var")):
                tensor.copy_(0.7 + 0.6 * torch.rand_like(tensor))
            elif name.endswith(("bn.bias", "running_mean")):
                tensor.copy_(0.2 * torch.randn_like(tensor))
            else:
                tensor.copy_(torch.randn_like(tensor) * (2.0 / tensor[0].numel()) ** 0.5)
    ours_state, stream = convert_authors_state_dict(theirs.state_dict())
    ours = build_model("epam", 5).eval()
    load_weights(ours, ours_state, strict=True)
    rgb, pose = torch.randn(2, 3, 8, 64, 64), torch.rand(2, 17, 24, 16, 16)
    with torch.no_grad():
        expected_rgb, expected_pose = theirs(rgb, pose)
        got = ours(rgb, pose)
    assert stream == "epam"
    torch.testing.assert_close(got.pose, expected_pose, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got.rgb, expected_rgb, rtol=1e-4, atol=1e-4)
    assert expected_rgb.std() > 1e-3 and (expected_rgb - expected_pose).abs().max() > 1e-3
