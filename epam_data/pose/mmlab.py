"""OpenMMLab pose backends: an mmdet person detector + an mmpose top-down COCO-17 estimator,
batched.

The paper's poses, like PYSKL's and MMAction2's released pickles, come from a Faster R-CNN R50-FPN
person detector and a top-down HRNet-W32 256x192 estimator (docs/prior-art.md 2.1, 3.1); RTMDet +
RTMPose are the faster modern pair. Two backends share the code here:

* `mmlab` (`MMLabBackend`): detector on every frame (batched over the frames of a chunk) -> person
  boxes with score >= `det_score_thr` and area >= `det_area_thr` (PYSKL's `custom_2d_skeleton.py`
  defaults: 0.7 and 1600 px^2) -> the pose model on every kept box of the chunk in batches ->
  `IoUTracker` ids (`epam_data.pose.tracking`), so the person slots of `epam_data.persons` stay the
  same person across frames (PYSKL keeps the detector's order instead, which swaps people).
* `blazepose+mmpose` (`BlazePoseMMPoseBackend`): the default backend's tracked person boxes
  (BlazePose, no mmdet) given to the mmpose estimator; it keeps BlazePose's track ids. Runs on the
  light install (mmcv-lite, no compiled ops), with heatmap models such as HRNet.

Both return `FramePoses` like every backend, so person selection, crops and shards are the same
code. Models are named (`DETECTORS`, `POSE_MODELS`: a config shipped inside the mmdet / mmpose
package and its published weights) or given as a config file; checkpoints are a local file, a URL
(downloaded once into torch's hub cache, as mmengine would) or "random" (no weights: tests and speed
measurements). `model_ids` records the package versions, configs, checkpoint hashes and thresholds
in dataset.json.

Installing: none of this is a plain pip extra (docs/pose-backends.md section 5): mmcv with its ops
is compiled from source, mmpose needs --no-deps. `scripts/install_mmlab.sh` does it; a missing
package raises PoseBackendError saying so. mmpose >= 1.2 imports torchvision at import time for one
visualiser only; where torchvision is absent or broken (no CPU build pairs with torch 2.13) a stub
module stands in for it.
"""

from __future__ import annotations

import hashlib
import os
import sys
import types
import urllib.parse
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from epam_data.pose.base import FramePoses, PoseBackendError, as_frames
from epam_data.pose.tracking import IoUTracker
from epam_data.threads import set_cpu_threads

__all__ = [
    "DETECTORS",
    "INSTALL_FULL",
    "INSTALL_LIGHT",
    "POSE_MODELS",
    "RANDOM_WEIGHTS",
    "BlazePoseMMPoseBackend",
    "MMLabBackend",
    "NamedModel",
    "PersonDetector",
    "TopDownEstimator",
    "resolve_checkpoint",
]

# mmcv compiled with its ops: 20-30 min on CPU; mmdet, mmpose 1.3.2
INSTALL_FULL = "bash scripts/install_mmlab.sh"
INSTALL_LIGHT = (
    "bash scripts/install_mmlab.sh --light"  # mmcv-lite + mmengine + mmpose 1.1.0: about a minute
)
RANDOM_WEIGHTS = "random"
DEFAULT_DET_SCORE = 0.7  # PYSKL custom_2d_skeleton.py --det-score-thr
DEFAULT_DET_AREA = 1600.0  # PYSKL custom_2d_skeleton.py --det-area-thr, px^2


@dataclass(frozen=True)
class NamedModel:
    """A config inside the mmdet / mmpose package (relative to its `.mim/configs`) and its published
    weights."""

    config: str
    checkpoint: str


_MMDET = "https://download.openmmlab.com/mmdetection"
_MMPOSE = "https://download.openmmlab.com/mmpose"
# faster-rcnn-person and hrnet-w32 are the pair of MMAction2's ntu_pose_extraction.py and PYSKL's
# custom_2d_skeleton.py (same checkpoints; the person config is mmdet 3.x's copy of theirs).
DETECTORS = {
    "faster-rcnn-person": NamedModel(
        "faster_rcnn/faster-rcnn_r50-caffe_fpn_ms-1x_coco-person.py",
        f"{_MMDET}/v2.0/faster_rcnn/faster_rcnn_r50_fpn_1x_coco-person/"
        "faster_rcnn_r50_fpn_1x_coco-person_20201216_175929-d022e227.pth",
    ),
    "faster-rcnn": NamedModel(
        "faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py",
        f"{_MMDET}/v2.0/faster_rcnn/faster_rcnn_r50_fpn_1x_coco/"
        "faster_rcnn_r50_fpn_1x_coco_20200130-047c8118.pth",
    ),
    "rtmdet-m": NamedModel(
        "rtmdet/rtmdet_m_8xb32-300e_coco.py",
        f"{_MMDET}/v3.0/rtmdet/rtmdet_m_8xb32-300e_coco/"
        "rtmdet_m_8xb32-300e_coco_20220719_112220-229f527c.pth",
    ),
    "rtmdet-tiny": NamedModel(
        "rtmdet/rtmdet_tiny_8xb32-300e_coco.py",
        f"{_MMDET}/v3.0/rtmdet/rtmdet_tiny_8xb32-300e_coco/"
        "rtmdet_tiny_8xb32-300e_coco_20220902_112414-78e30dcc.pth",
    ),
}
POSE_MODELS = {
    "hrnet-w32": NamedModel(
        "body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w32_8xb64-210e_coco-256x192.py",
        f"{_MMPOSE}/top_down/hrnet/hrnet_w32_coco_256x192-c78dce93_20200708.pth",
    ),
    "rtmpose-m": NamedModel(
        "body_2d_keypoint/rtmpose/coco/rtmpose-m_8xb256-420e_coco-256x192.py",
        f"{_MMPOSE}/v1/projects/rtmposev1/"
        "rtmpose-m_simcc-coco_pt-aic-coco_420e-256x192-d8dd5ca4_20230127.pth",
    ),
}
DEFAULT_DETECTOR = "faster-rcnn-person"
DEFAULT_POSE = "hrnet-w32"

_hash_cache: dict[tuple[str, int, int], str] = {}


# --- imports of the optional stack ----------------------------------------------------------------


def _stub_torchvision() -> None:
    """Let mmpose >= 1.2 import without a working torchvision (docs/pose-backends.md section 5.3).

    Only `mmpose.visualization.simcc_vis` uses it (`from torchvision.transforms import ToPILImage`).
    When `import torchvision` fails (absent, or the CUDA-only build that raises "operator
    torchvision::nms does not exist"), a module with a ToPILImage that raises if called takes its
    place in sys.modules.
    """
    try:
        import torchvision  # noqa: F401

        return
    # ModuleNotFoundError or the RuntimeError of a mismatched build
    except Exception:  # noqa: BLE001
        for key in [
            key for key in sys.modules if key == "torchvision" or key.startswith("torchvision.")
        ]:
            del sys.modules[key]
    stub, transforms = types.ModuleType("torchvision"), types.ModuleType("torchvision.transforms")

    class ToPILImage:
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(
                "torchvision is not available (epam stubbed it so that mmpose imports)"
            )

    transforms.ToPILImage = ToPILImage  # type: ignore[attr-defined]
    stub.transforms = transforms  # type: ignore[attr-defined]
    stub.__epam_stub__ = True  # type: ignore[attr-defined]
    sys.modules.update({"torchvision": stub, "torchvision.transforms": transforms})


def _import_mmpose() -> Any:
    """The mmpose package, with its inference API importable; PoseBackendError saying how to install
    it."""
    _stub_torchvision()
    try:
        with (
            warnings.catch_warnings()
        ):  # mmcv-lite's "Fail to import MultiScaleDeformableAttention", pkg_resources
            warnings.simplefilter("ignore")
            import mmpose
            import mmpose.apis
    except ImportError as err:
        raise PoseBackendError(
            f"the mmpose pose estimator is not installed here ({type(err).__name__}: {err}); "
            f"run `{INSTALL_LIGHT}` (about a minute: HRNet on BlazePose's boxes) or "
            f"`{INSTALL_FULL}` (20-30 min: mmcv is compiled; the mmdet detector and RTMPose too)"
        ) from None
    return mmpose


def _import_mmdet() -> Any:
    """The mmdet package, with mmcv's compiled ops; PoseBackendError saying how to install it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # mmcv-lite has no `mmcv._ext`: every detector needs its NMS / RoIAlign
            import mmcv.ops  # noqa: F401
            import mmdet
            import mmdet.apis
    except ImportError as err:
        raise PoseBackendError(
            f"the mmlab pose backend needs mmdet and mmcv built with its ops, missing here "
            f"({type(err).__name__}: {err}); run `{INSTALL_FULL}` (20-30 min: it compiles mmcv), "
            "or use --backend blazepose+mmpose (no mmdet needed)"
        ) from None
    return mmdet


# --- configs, checkpoints, ids --------------------------------------------------------------------


def _package_configs(package: Any) -> Path:
    return Path(package.__file__).parent / ".mim" / "configs"


def _resolve_model(
    config: str,
    checkpoint: str | os.PathLike | None,
    package: Any,
    named: dict[str, NamedModel],
    what: str,
) -> tuple[Path, str, Path | None]:
    """(config file, its id for dataset.json, local weights or None for random) of one model:
    `config` as `_resolve_config` takes it, `checkpoint` as `resolve_checkpoint` takes it, None
    meaning the named model's published weights."""
    config_path, config_id, published = _resolve_config(config, package, named, f"{what} config")
    if checkpoint is None:
        if published is None:
            flag = "--det-checkpoint" if what == "detector" else "--pose-checkpoint"
            raise PoseBackendError(
                f"{what} config {config}: give its checkpoint ({flag} FILE or URL)"
            )
        checkpoint = published
    return config_path, config_id, resolve_checkpoint(checkpoint, f"{what} checkpoint")


def _resolve_config(
    value: str, package: Any, named: dict[str, NamedModel], what: str
) -> tuple[Path, str, str | None]:
    """(config file, its id for dataset.json, the published checkpoint or None) for a model name, a
    config file, or a config path inside the package (e.g. rtmdet/rtmdet_s_8xb32-300e_coco.py)."""
    version = f"{package.__name__} {package.__version__}"
    if value in named:
        path = _package_configs(package) / named[value].config
        if not path.is_file():
            raise PoseBackendError(
                f"{what} {value!r}: {path} is not in {version}; install the version "
                f"scripts/install_mmlab.sh pins"
            )
        return path, f"{version} {named[value].config}", named[value].checkpoint
    path = Path(value).expanduser()
    if path.is_file():
        return path.resolve(), f"{path.name} sha256:{_sha256(path)}", None
    inside = _package_configs(package) / value
    if inside.is_file():
        return inside, f"{version} {value}", None
    raise PoseBackendError(
        f"{what} {value!r}: not a model name ({', '.join(sorted(named))}), not a file, and not a "
        f"config inside {version} ({_package_configs(package)})"
    )


def _sha256(path: Path) -> str:
    """First 12 hex digits of the file's sha256 (cached by path, size and mtime: checkpoints are
    100+ MB)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _hash_cache:
        digest = hashlib.sha256()
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
        _hash_cache[key] = digest.hexdigest()[:12]
    return _hash_cache[key]


def resolve_checkpoint(value: str | os.PathLike | None, what: str) -> Path | None:
    """A local checkpoint file for `value`: a path, or an http(s) URL downloaded once into torch's
    hub cache (`$TORCH_HOME/hub/checkpoints`, where mmengine puts it too); None for "random" (no
    weights)."""
    if value is None or str(value) == RANDOM_WEIGHTS:
        return None
    text = str(value)
    if urllib.parse.urlparse(text).scheme in ("http", "https"):
        import torch.hub

        target = (
            Path(torch.hub.get_dir()) / "checkpoints" / Path(urllib.parse.urlparse(text).path).name
        )
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                torch.hub.download_url_to_file(text, str(target), progress=False)
            except Exception as err:  # noqa: BLE001 (URLError, HTTPError, timeouts, ...)
                raise PoseBackendError(
                    f"{what} {text}: cannot download it ({type(err).__name__}: {err}); download "
                    f"it where there is internet and pass the file instead"
                ) from None
        return target
    path = Path(text).expanduser()
    if not path.is_file():
        raise PoseBackendError(
            f"{what} {text}: no such file (give a .pth file, an http(s) URL, or "
            f"{RANDOM_WEIGHTS!r} for untrained weights)"
        )
    return path


def _checkpoint_id(path: Path | None) -> str:
    return "random init (no checkpoint)" if path is None else f"{path.name} sha256:{_sha256(path)}"


def _load_weights(model: Any, path: Path, what: str) -> dict[str, Any]:
    """Load a checkpoint's state_dict into `model`; returns the checkpoint's `meta` (may be empty).

    torch.load runs with weights_only=True: a checkpoint from the internet cannot run code while it
    loads. OpenMMLab checkpoints whose meta holds other Python objects (mmengine message hubs) are
    refused, unless the user says they trust the file (EPAM_TRUST_CHECKPOINTS=1, then read as
    mmengine reads them). Refuses a checkpoint that fills less than half of the model's tensors (the
    wrong model for this config).
    """
    import os
    import pickle

    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, EOFError) as err:
        if "weights only load failed" not in str(err).lower():
            raise PoseBackendError(
                f"{what} {path}: cannot read it as a torch checkpoint ({type(err).__name__}: "
                f"{(str(err).strip().splitlines() or [''])[0][:200]})"
            ) from None
        if os.environ.get("EPAM_TRUST_CHECKPOINTS") != "1":
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            cause = next(
                (line for line in lines if "error:" in line.lower()), lines[0] if lines else ""
            )[:200]
            raise PoseBackendError(
                f"{what} {path}: torch.load(weights_only=True) refused it ({cause}): it is not a "
                "torch checkpoint, or it holds Python objects besides tensors, and loading those "
                "could run code; if you trust the file, set EPAM_TRUST_CHECKPOINTS=1, or save its "
                "state_dict alone with torch.save"
            ) from None
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as load_err:  # noqa: BLE001
            raise PoseBackendError(
                f"{what} {path}: cannot read it as a torch checkpoint ({load_err})"
            ) from None
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise PoseBackendError(f"{what} {path}: holds no state_dict")
    state = {key.removeprefix("module."): value for key, value in state.items()}
    expected = len(model.state_dict())
    result = model.load_state_dict(state, strict=False)
    if len(result.missing_keys) > expected / 2:
        raise PoseBackendError(
            f"{what} {path}: fills only {expected - len(result.missing_keys)} of the model's "
            f"{expected} tensors (e.g. missing {result.missing_keys[0]}); it is not a checkpoint "
            "of this config"
        )
    meta = checkpoint.get("meta", {}) if isinstance(checkpoint, dict) else {}
    return meta if isinstance(meta, dict) else {}


def _device(device: str | None) -> str:
    import torch

    if device is None or device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PoseBackendError(
            f"--device {device}: this torch build sees no CUDA device; use --device cpu"
        )
    return device


def _flag(value: bool | str | None) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise PoseBackendError(f"expected true or false, got {value!r}")


def _quiet_init_weights(model: Any) -> None:
    """`model.init_weights()` without mmengine's log line for every tensor (hundreds for a
    detector)."""
    import logging

    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(
        logging.ERROR
    )  # also "The value is the same before and after calling `init_weights`"
    try:
        model.init_weights()
    finally:
        logger.setLevel(level)


def _drop_warning(*args: Any, **kwargs: Any) -> None:
    """A `warnings.showwarning` that shows nothing (inside `warnings.catch_warnings`, which restores
    the real one)."""


def _bgr(frame: np.ndarray) -> np.ndarray:
    """OpenMMLab pipelines take images as cv2 reads them: BGR, contiguous."""
    return np.ascontiguousarray(frame[..., ::-1])


# --- the two halves -------------------------------------------------------------------------------


class TopDownEstimator:
    """An mmpose top-down COCO-17 model: frames + person boxes -> keypoints in frame pixels, batched
    over boxes.

    Args:
        config: a `POSE_MODELS` name, a config file, or a config path inside mmpose's package.
        checkpoint: a .pth file, a URL, or "random"; None: the named model's published weights.
        device: "cpu", "cuda", "cuda:1"; None: CUDA when torch sees it.
        batch_size: crops per forward pass.
        flip_test: average with the horizontally flipped crop (the configs' default: on; off halves
            the cost).
    """

    def __init__(
        self,
        config: str = DEFAULT_POSE,
        checkpoint: str | os.PathLike | None = None,
        *,
        device: str | None = None,
        batch_size: int | str = 32,
        flip_test: bool | str | None = None,
    ) -> None:
        mmpose = _import_mmpose()
        from mmengine.config import Config
        from mmengine.dataset import Compose
        from mmengine.registry import DefaultScope
        from mmpose.apis import init_model

        config_path, config_id, weights = _resolve_model(
            config, checkpoint, mmpose, POSE_MODELS, "pose"
        )
        self.device = _device(device)
        self.batch_size = int(batch_size)
        cfg = Config.fromfile(str(config_path))
        flip = _flag(flip_test)
        if flip is not None:
            cfg.model.test_cfg.flip_test = flip
        self.flip_test = bool(cfg.model.test_cfg.get("flip_test", False))
        with DefaultScope.overwrite_default_scope("mmpose"), warnings.catch_warnings():
            warnings.simplefilter(
                "ignore"
            )  # "metainfo config file ... will be used instead", and the like
            try:
                self.model = init_model(cfg, None, device="cpu")
            except (
                KeyError,
                ImportError,
            ) as err:  # a registry miss: RTMPose's CSPNeXt backbone lives in mmdet
                raise PoseBackendError(
                    f"pose config {config}: cannot be built with the packages installed here "
                    f"({str(err).split('. ')[0].strip(chr(39))}); RTMPose needs mmdet and mmpose "
                    f">= 1.2, i.e. the full install: `{INSTALL_FULL}`"
                ) from None
            if weights is not None:
                _load_weights(self.model, weights, "pose checkpoint")
            self.model.to(self.device).eval()
            self.pipeline = Compose(cfg.test_dataloader.dataset.pipeline)
        meta = self.model.dataset_meta
        if (
            meta.get("num_keypoints") != 17
            or self.model.__class__.__name__ != "TopdownPoseEstimator"
        ):
            raise PoseBackendError(
                f"pose config {config}: a top-down COCO-17 model is needed, this is a "
                f"{self.model.__class__.__name__} with {meta.get('num_keypoints')} keypoints"
            )
        self.model_ids = {
            "pose": config_id,
            "pose_checkpoint": _checkpoint_id(weights),
            "pose_test": f"flip_test={self.flip_test}",
        }

    def estimate(
        self, frames: np.ndarray, boxes: Sequence[np.ndarray]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """frames: uint8 [T, H, W, 3] RGB; boxes: T arrays [N_t, 4+] (x1, y1, x2, y2 pixels) -> per
        frame (keypoints float32 [N_t, 17, 2] in frame pixels, scores float32 [N_t, 17] clipped to
        [0, 1]).

        Every box of every frame goes into batches of `batch_size` crops; the crop is the box padded
        by 1.25 and widened to the model's aspect ratio (mmpose's GetBBoxCenterScale +
        TopdownAffine), and mmpose maps the keypoints back to frame pixels.
        """
        import torch
        from mmengine.dataset import pseudo_collate

        out = [
            (np.zeros((len(b), 17, 2), np.float32), np.zeros((len(b), 17), np.float32))
            for b in boxes
        ]
        items = [(t, row) for t, frame_boxes in enumerate(boxes) for row in range(len(frame_boxes))]
        bgr: dict[int, np.ndarray] = {}
        for first in range(0, len(items), self.batch_size):
            batch = items[first : first + self.batch_size]
            data = []
            for t, row in batch:
                if t not in bgr:
                    bgr = {
                        t: _bgr(frames[t])
                    }  # batches run in frame order: keep one converted frame
                box = np.array(boxes[t][row, :4], np.float32)
                box[2:] = np.maximum(
                    box[2:], box[:2] + 1
                )  # a box squashed to a line at the frame's edge
                info = {
                    "img": bgr[t],
                    "bbox": box[None],
                    "bbox_score": np.ones(1, np.float32),
                    **self.model.dataset_meta,
                }
                data.append(self.pipeline(info))
            with torch.no_grad():
                results = self.model.test_step(pseudo_collate(data))
            for (t, row), result in zip(batch, results):
                out[t][0][row] = np.asarray(result.pred_instances.keypoints[0], np.float32)
                out[t][1][row] = np.clip(
                    np.asarray(result.pred_instances.keypoint_scores[0], np.float32), 0, 1
                )
        return out


def _raise_score_thr(cfg: Any, score_thr: float) -> None:
    """Raise the detector config's own test score threshold (the R-CNN stage's, for two-stage
    models) to `score_thr`, so the boxes we would drop are dropped before NMS keeps them."""
    test_cfg = cfg.model.test_cfg
    stage = test_cfg.rcnn if "rcnn" in test_cfg else test_cfg
    if "score_thr" in stage:
        stage.score_thr = max(float(stage.score_thr), score_thr)


def _person_label(cfg: Any, meta: dict[str, Any], model: Any, config: str) -> int:
    """The detector's label index of 'person', from the first class list found in the config,
    the checkpoint's meta or the model; a detector without that class cannot be used."""
    classes = (
        cfg.get("test_dataloader", {}).get("dataset", {}).get("metainfo", {}).get("classes")
        or meta.get("dataset_meta", {}).get("classes")
        or meta.get("CLASSES")
        or model.dataset_meta.get("classes")
    )
    if not classes or "person" not in classes:
        raise PoseBackendError(
            f"detector config {config}: its classes have no 'person' ({classes}); use a "
            "COCO detector"
        )
    return list(classes).index("person")


class PersonDetector:
    """An mmdet detector kept to its person class: frames -> person boxes, batched over frames.

    Args:
        config: a `DETECTORS` name, a config file, or a config path inside mmdet's package.
        checkpoint: a .pth file, a URL, or "random"; None: the named model's published weights.
        device: "cpu", "cuda", ...; None: CUDA when torch sees it (mmcv must then be built with CUDA
            ops).
        score_thr, area_thr: keep boxes with score >= score_thr and area >= area_thr px^2 (PYSKL:
            0.7, 1600). The model's own test score threshold is raised to score_thr, which drops the
            same boxes earlier.
        max_detections: keep at most this many boxes per frame, best first (None: all).
        batch_size: frames per forward pass.
    """

    def __init__(
        self,
        config: str = DEFAULT_DETECTOR,
        checkpoint: str | os.PathLike | None = None,
        *,
        device: str | None = None,
        score_thr: float | str = DEFAULT_DET_SCORE,
        area_thr: float | str = DEFAULT_DET_AREA,
        max_detections: int | str | None = None,
        batch_size: int | str = 8,
    ) -> None:
        mmdet = _import_mmdet()
        from mmcv.transforms import Compose
        from mmdet.apis import init_detector
        from mmdet.utils import get_test_pipeline_cfg
        from mmengine.config import Config
        from mmengine.registry import DefaultScope

        config_path, config_id, weights = _resolve_model(
            config, checkpoint, mmdet, DETECTORS, "detector"
        )
        self.device = _device(device)
        self.score_thr, self.area_thr = float(score_thr), float(area_thr)
        self.max_detections = None if max_detections in (None, "", "none") else int(max_detections)
        self.batch_size = int(batch_size)
        cfg = Config.fromfile(str(config_path))
        _raise_score_thr(cfg, self.score_thr)
        with DefaultScope.overwrite_default_scope("mmdet"), warnings.catch_warnings():
            warnings.simplefilter(
                "ignore"
            )  # "checkpoint is None, use COCO classes by default", and the like
            warnings.showwarning = (
                _drop_warning  # mmdet calls simplefilter("once") itself; restored on exit
            )
            self.model = init_detector(cfg, None, device="cpu")
            meta: dict[str, Any] = {}
            if weights is not None:
                meta = _load_weights(self.model, weights, "detector checkpoint")
            else:
                _quiet_init_weights(
                    self.model
                )  # RTMDet's prior-probability bias: otherwise every anchor scores 0.5
            self.model.to(self.device).eval()
            pipeline = get_test_pipeline_cfg(cfg.copy())
            pipeline[0].type = "mmdet.LoadImageFromNDArray"
            self.pipeline = Compose(pipeline)
        self.person_label = _person_label(cfg, meta, self.model, config)
        self.model_ids = {
            "detector": config_id,
            "detector_checkpoint": _checkpoint_id(weights),
            "person_boxes": f"score >= {self.score_thr:g}, area >= {self.area_thr:g} px^2"
            + ("" if self.max_detections is None else f", best {self.max_detections}"),
        }

    def detect(self, frames: np.ndarray) -> list[np.ndarray]:
        """frames: uint8 [T, H, W, 3] RGB -> per frame float32 [N_t, 5] person boxes (x1, y1, x2,
        y2, score) in frame pixels, clipped to the frame, best first."""
        import torch

        height, width = frames.shape[1:3]
        found = []
        for first in range(0, len(frames), self.batch_size):
            data = [
                self.pipeline({"img": _bgr(frame), "img_id": first + index})
                for index, frame in enumerate(frames[first : first + self.batch_size])
            ]
            batch = {
                "inputs": [item["inputs"] for item in data],
                "data_samples": [item["data_samples"] for item in data],
            }
            with torch.no_grad():
                results = self.model.test_step(batch)
            for result in results:
                instances = result.pred_instances
                boxes = instances.bboxes.cpu().numpy().astype(np.float32)
                scores = instances.scores.cpu().numpy().astype(np.float32)
                labels = instances.labels.cpu().numpy()
                boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
                boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
                area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
                keep = (
                    (labels == self.person_label)
                    & (scores >= self.score_thr)
                    & (area >= self.area_thr)
                )
                order = np.argsort(-scores[keep], kind="stable")[: self.max_detections]
                found.append(
                    np.concatenate([boxes[keep][order], scores[keep][order, None]], axis=1)
                )
        return found


# --- the backends ---------------------------------------------------------------------------------


class MMLabBackend:
    """mmdet person detector + mmpose top-down estimator + IoU tracker (module docstring). Load it
    with `load_backend("mmlab", ...)`; `epam-data extract --backend mmlab --det-config ...
    --pose-config ...`.

    Args:
        det_config, det_checkpoint: the detector (`PersonDetector`); default Faster R-CNN R50-FPN
            COCO-person.
        pose_config, pose_checkpoint: the pose model (`TopDownEstimator`); default HRNet-W32
            256x192.
        device: where both run; None: CUDA when torch sees it.
        threads: torch CPU threads (`set_cpu_threads`: default $OMP_NUM_THREADS, else the usable
            cores less one).
        det_score_thr, det_area_thr, max_detections: which boxes become persons (PYSKL: 0.7, 1600
            px^2, all).
        det_batch, pose_batch: frames per detector pass, crops per pose pass.
        flip_test: the pose model's flip test (None: as its config says).
        min_iou, max_keypoint_shift, max_missed: the tracker's (`IoUTracker`).
        max_persons, detect_every: accepted because extract passes them to every backend, and
            unused: the detector runs on every frame and every kept box gets a pose (PYSKL's rule);
            `select_persons` then keeps the best M tracks.
    """

    name = "mmlab"

    def __init__(
        self,
        *,
        det_config: str = DEFAULT_DETECTOR,
        det_checkpoint: str | None = None,
        pose_config: str = DEFAULT_POSE,
        pose_checkpoint: str | None = None,
        device: str | None = None,
        threads: int | str | None = None,
        det_score_thr: float | str = DEFAULT_DET_SCORE,
        det_area_thr: float | str = DEFAULT_DET_AREA,
        max_detections: int | str | None = None,
        det_batch: int | str = 8,
        pose_batch: int | str = 32,
        flip_test: bool | str | None = None,
        min_iou: float | str = 0.5,
        max_keypoint_shift: float | str = 0.25,
        max_missed: int | str = 10,
        max_persons: int | None = None,
        detect_every: int | None = None,
    ) -> None:
        del max_persons, detect_every
        # both before any work, so that a missing package is the one line the user sees
        _import_mmdet()
        _import_mmpose()
        device = _device(device)
        self.threads = set_cpu_threads(threads, device)
        self.detector = PersonDetector(
            det_config,
            det_checkpoint,
            device=device,
            score_thr=det_score_thr,
            area_thr=det_area_thr,
            max_detections=max_detections,
            batch_size=det_batch,
        )
        self.estimator = TopDownEstimator(
            pose_config, pose_checkpoint, device=device, batch_size=pose_batch, flip_test=flip_test
        )
        self.tracker = IoUTracker(
            min_iou=float(min_iou),
            max_keypoint_shift=float(max_keypoint_shift),
            max_missed=int(max_missed),
        )
        self.model_ids = {
            **self.detector.model_ids,
            **self.estimator.model_ids,
            "tracker": f"IoU >= {self.tracker.min_iou:g} or keypoint shift <= "
            f"{self.tracker.max_keypoint_shift:g} box, "
            f"{self.tracker.max_missed} missed frames",
        }

    def reset(self) -> None:
        """Forget every tracked person; track ids restart at 0 (call between videos)."""
        self.tracker.reset()

    def estimate(self, frames: np.ndarray) -> list[FramePoses]:
        """frames: uint8 [T, H, W, 3] RGB -> one `FramePoses` per frame; tracking carries on across
        calls."""
        frames = as_frames(frames)
        boxes = self.detector.detect(frames)
        poses = self.estimator.estimate(frames, boxes)
        out = []
        for frame_boxes, (keypoints, scores) in zip(boxes, poses):
            ids = self.tracker.update(frame_boxes, keypoints, scores)
            out.append(
                FramePoses(keypoints, scores, frame_boxes, ids) if len(ids) else FramePoses.empty()
            )
        return out


class BlazePoseMMPoseBackend:
    """BlazePose's tracked person boxes + an mmpose top-down estimator: no mmdet, runs on the light
    install.

    BlazePose (`epam_data.pose.blazepose`) finds and tracks the people (its ids are kept); its box
    around each person's 33 landmarks is the crop the pose model sees (padded by 1.25 as mmpose
    does). Load it with `load_backend("blazepose+mmpose", ...)`.

    Args:
        pose_config, pose_checkpoint, device, threads, pose_batch, flip_test: as for `MMLabBackend`.
        max_persons, detect_every, and any other keyword: BlazePose's (`BlazePoseBackend`).
    """

    name = "blazepose+mmpose"

    def __init__(
        self,
        *,
        pose_config: str = DEFAULT_POSE,
        pose_checkpoint: str | None = None,
        device: str | None = None,
        threads: int | str | None = None,
        pose_batch: int | str = 32,
        flip_test: bool | str | None = None,
        **blazepose_options: Any,
    ) -> None:
        from epam_data.pose.blazepose import BlazePoseBackend

        _import_mmpose()
        device = _device(device)
        self.threads = set_cpu_threads(threads, device)
        self.estimator = TopDownEstimator(
            pose_config, pose_checkpoint, device=device, batch_size=pose_batch, flip_test=flip_test
        )
        self.blazepose = BlazePoseBackend(**blazepose_options)
        self.model_ids = {
            **{f"boxes_{key}": value for key, value in self.blazepose.model_ids.items()},
            **self.estimator.model_ids,
        }

    def reset(self) -> None:
        """Forget every tracked person (BlazePose's tracks); ids restart at 0."""
        self.blazepose.reset()

    def estimate(self, frames: np.ndarray) -> list[FramePoses]:
        """frames: uint8 [T, H, W, 3] RGB -> one `FramePoses` per frame: BlazePose's boxes and ids,
        mmpose's keypoints and scores."""
        frames = as_frames(frames)
        tracked = self.blazepose.estimate(frames)
        poses = self.estimator.estimate(frames, [found.boxes for found in tracked])
        return [
            FramePoses(keypoints, scores, found.boxes, found.track_ids) if len(found) else found
            for found, (keypoints, scores) in zip(tracked, poses)
        ]
