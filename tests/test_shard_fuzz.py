"""Damaged shards, tried the way a tester of a data tool would: real HDF5 files written by the real
ShardWriter, mutated (bytes flipped, runs zeroed, the file cut short), then walked and read.

What fuzzing found and these tests now guard: HDF5 looping forever on a damaged heap (verify hung),
attributes changed without any checksum noticing (a source path), and heatmap chunks that read back
as zeros without an error (a damaged chunk index or filter mask, which fletcher32 never sees).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import prepared_sample

from epam_data.errors import EpamError, ShardError
from epam_data.shards import ShardWriter, verify_dataset
from epam_data.shards import verify as verify_module
from epam_data.shards.h5io import open_h5, read_group

pytestmark = pytest.mark.usefixtures("pyav")  # the samples carry real JPEG frames encoded by ffmpeg

SEED = 3
MUTANTS = 1500


def _shard_of_three(folder: Path) -> Path:
    """A real shard of three samples (the second with joint and limb heatmaps)."""
    with ShardWriter(folder, samples_per_shard=4) as writer:
        for index in range(3):
            writer.write(prepared_sample(index, frames=6, heatmaps=index == 1))
    return folder / "shards" / "shard-00000.h5"


def _read_all(path: Path) -> dict:
    with open_h5(path) as h5file:
        return {sample_id: read_group(group) for sample_id, group in h5file.items()}


def _first_difference(got, want) -> str | None:
    """The first field of two PreparedSamples that differs, or None."""
    for field in dataclasses.fields(want):
        a, b = getattr(got, field.name), getattr(want, field.name)
        if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
            if a is None or b is None or a.shape != b.shape or not np.array_equal(a, b):
                return field.name
        elif a != b:
            return field.name
    return None


def _mutant(original: bytes, rng: np.random.Generator) -> bytes:
    """One of three damages: 1-4 bytes flipped, a run of 1-63 bytes zeroed, or the file cut."""
    data = bytearray(original)
    kind = int(rng.integers(3))
    if kind == 0:
        for position in rng.integers(0, len(data), int(rng.integers(1, 5))):
            data[position] ^= int(rng.integers(1, 256))
    elif kind == 1:
        start, length = int(rng.integers(0, len(data))), int(rng.integers(1, 64))
        data[start : start + length] = bytes(len(data[start : start + length]))
    else:
        del data[int(rng.integers(0, len(data))) :]
    return bytes(data)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    """1,500 seeded mutants of one small real shard, walked as `verify --deep` and `--repair` walk
    them (a looping HDF5 read counts as lost after 5 s here): (original bytes, samples, mutant
    files, problems by file)."""
    folder = tmp_path_factory.mktemp("fuzz")
    shard = _shard_of_three(folder / "ds")
    original, truth = shard.read_bytes(), _read_all(shard)
    rng = np.random.default_rng(SEED)
    files = []
    for number in range(MUTANTS):
        files.append(folder / f"m{number:04d}.h5")
        files[-1].write_bytes(_mutant(original, rng))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(verify_module, "WALK_TIMEOUT_S", 5.0)
        damage = verify_module.shards_damage(files, deep=True)
    return original, truth, files, damage


def test_fuzzed_shards_are_reported_or_read_back_exactly(fuzzed):
    """No traceback, no hang, one line per problem, and every mutant without a problem reads back
    exactly the original samples: nothing is silently wrong. About 25 s on 2 cores."""
    _, truth, files, damage = fuzzed
    lines = [line for problems in damage.values() for line in problems]
    assert all(isinstance(line, str) and "\n" not in line for line in lines)
    assert len(damage) > 0.85 * MUTANTS  # most damage is seen; the rest must read back exactly
    silent = []
    for path in files:
        if path not in damage:
            got = _read_all(path)
            assert sorted(got) == sorted(truth), path.name
            silent += [(path.name, sid, _first_difference(got[sid], truth[sid])) for sid in truth]
    assert [case for case in silent if case[2] is not None] == []


def test_a_looping_hdf5_read_is_one_line_and_verify_goes_on(fuzzed, tmp_path, monkeypatch):
    """A mutant of the fuzz that makes HDF5 loop forever, in a dataset beside a good shard: verify
    reports it in one line after the time limit and still checks the other shard."""
    _, _, _, damage = fuzzed
    looping = [path for path, lines in damage.items() if "loops" in lines[0]]
    if not looping:
        pytest.skip("no mutant made this HDF5 build loop; nothing to show")
    monkeypatch.setattr(verify_module, "WALK_TIMEOUT_S", 3.0)
    with ShardWriter(tmp_path, samples_per_shard=1) as writer:
        for index in range(2):
            writer.write(prepared_sample(index))
    (tmp_path / "shards" / "shard-00000.h5").write_bytes(looping[0].read_bytes())
    problems = verify_dataset(tmp_path, deep=True)
    assert any("HDF5 library loops reading it" in line and "--repair" in line for line in problems)
    assert not any("shard-00001" in line for line in problems), problems


def test_a_changed_attribute_fails_its_checksum(tmp_path):
    """A source path rewritten in place (HDF5 stays consistent): reading the sample is one line
    naming shard, sample and the attributes; verify --deep reports it."""
    shard = _shard_of_three(tmp_path / "ds")
    sample_id = prepared_sample(0).sample_id
    with h5py.File(shard, "r+") as h5file:
        h5file[sample_id].attrs["path"] = "somewhere/else.avi"
    with pytest.raises(ShardError, match=rf"shard-00000.h5:/{sample_id}: the attributes"):
        _read_all(shard)
    assert any("attributes" in line for line in verify_dataset(tmp_path / "ds", deep=True))


@pytest.mark.parametrize("name", ["joint_heatmaps", "limb_heatmaps"])
def test_a_rewritten_heatmap_frame_fails_its_checksum(tmp_path, name):
    """A heatmap frame rewritten through HDF5 (so its fletcher32 is recomputed and passes): the
    per-frame CRC names the frame."""
    shard = _shard_of_three(tmp_path / "ds")
    sample_id = prepared_sample(1).sample_id
    with h5py.File(shard, "r+") as h5file:
        dataset = h5file[sample_id][name]
        dataset[3] = 255 - dataset[3]
    with pytest.raises(ShardError, match=rf"{name} frame 3 does not match its checksum"):
        _read_all(shard)
    assert any(f"{name} frame 3" in line for line in verify_dataset(tmp_path / "ds", deep=True))


class _ShardKeypoints(torch.utils.data.Dataset):
    """Every sample's keypoints of one shard file, as a training loader's worker reads them."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> np.ndarray:
        with open_h5(self.path) as h5file:
            return np.concatenate([read_group(group).keypoints for group in h5file.values()])


def test_a_looping_shard_in_a_loader_worker_is_one_line_naming_verify(fuzzed, monkeypatch):
    """The looping mutant read by a real DataLoader worker, as training and evaluation read: the
    loader's time limit turns the hang into one EpamError that names `verify --deep`."""
    from epam_model import engine

    _, _, _, damage = fuzzed
    looping = [path for path, lines in damage.items() if "loops" in lines[0]]
    if not looping:
        pytest.skip("no mutant made this HDF5 build loop; nothing to show")
    monkeypatch.setattr(engine, "LOADER_TIMEOUT_S", 3.0)
    loader = torch.utils.data.DataLoader(
        _ShardKeypoints(looping[0]), batch_size=1, **engine._loader_options(1)
    )
    with pytest.raises(EpamError, match=r"no batch .* in 3 s: a damaged shard .* verify DATASET"):
        list(engine._batches(loader))


def _outside_file(folder: Path) -> Path:
    """An HDF5 file outside the dataset, holding keypoints of the right shape."""
    outside = folder / "outside.h5"
    with h5py.File(outside, "w") as h5file:
        h5file["keypoints"] = np.full((2, 6, 17, 2), 7.0, np.float32)
    return outside


def _point_outside(group: h5py.Group, outside: Path, how: str) -> None:
    """Replace the group's keypoints by ones read from `outside`, in one of HDF5's three ways."""
    del group["keypoints"]
    if how == "external link":
        group["keypoints"] = h5py.ExternalLink(str(outside), "/keypoints")
    elif how == "external storage":
        raw = outside.with_suffix(".raw")
        raw.write_bytes(np.full((2, 6, 17, 2), 7.0, np.float32).tobytes())
        group.create_dataset(
            "keypoints", shape=(2, 6, 17, 2), dtype="f4", external=[(str(raw), 0, 816 * 4)]
        )
    else:
        layout = h5py.VirtualLayout(shape=(2, 6, 17, 2), dtype="f4")
        layout[:] = h5py.VirtualSource(str(outside), "keypoints", shape=(2, 6, 17, 2))
        group.create_virtual_dataset("keypoints", layout)


@pytest.mark.parametrize("how", ["external link", "external storage", "virtual dataset"])
def test_a_shard_that_points_outside_itself_is_refused(tmp_path, how):
    """A forged shard whose keypoints live in another file: the reader and verify refuse it in one
    line instead of reading that file, and so does the index rebuild for a link."""
    from epam_data.shards import ShardReader, rebuild_index

    shard = _shard_of_three(tmp_path / "ds")
    sample_id = prepared_sample(0).sample_id
    with h5py.File(shard, "r+") as h5file:
        _point_outside(h5file[sample_id], _outside_file(tmp_path), how)
    with open_h5(shard) as h5file:
        assert h5file[sample_id]["keypoints"][0, 0, 0, 0] == 7.0  # HDF5 itself would read it
    with ShardReader(tmp_path / "ds") as reader, pytest.raises(ShardError, match="not stored in"):
        reader.read(sample_id)
    problems = verify_dataset(tmp_path / "ds", deep=False)
    assert any(sample_id in line and "not stored in this shard" in line for line in problems)
    if how == "external link":  # rebuilding the index reads shapes: only a link would go out
        (tmp_path / "ds" / "shards" / "shard-00000.csv").unlink()  # rebuilt from the shard
        with pytest.warns(UserWarning, match="not stored in this shard"):
            rebuild_index(tmp_path / "ds")
