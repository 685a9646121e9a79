from pathlib import Path

import pytest

from epam_data.datasets import scan_names
from epam_data.datasets.pku_mmd import (
    parse_pku_sample_id,
    parse_video_id,
    read_label_file,
    read_split_file,
)
from epam_data.errors import EpamError, LabelFileError, NameParseError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_label_lines_become_clips_numbered_by_start_frame(tmp_path):
    # Lines out of order on purpose: k follows the start frame, as in EPAM-Net's trimming script.
    label_file = write(tmp_path / "0002-L.txt", "5,300,400,1\n12,10,120,2\n51,500,650,0\n")
    scan = read_label_file(label_file)
    assert [s.sample_id for s in scan.samples] == [
        "0002-L-A12-N01",
        "0002-L-A05-N02",
        "0002-L-A51-N03",
    ]
    first = scan.samples[0]
    assert (first.label, first.label_name) == (11, "giving something to other person")
    assert (first.video, first.view) == ("0002-L", "L")
    assert (first.start_frame, first.end_frame) == (10, 120)
    assert scan.samples[2].label_name == "writing" and scan.samples[2].label == 50
    assert scan.rejected == []


def test_start_after_end_is_reported_and_keeps_numbering(tmp_path):
    # The real 0043-L.txt has the line 1,4925,4036,2.
    label_file = write(tmp_path / "0043-L.txt", "3,100,200,1\n1,4925,4036,2\n7,5000,5100,1\n")
    scan = read_label_file(label_file)
    assert [s.sample_id for s in scan.samples] == ["0043-L-A03-N01", "0043-L-A07-N03"]
    assert len(scan.rejected) == 1
    assert "line 2: start frame 4925 is after end frame 4036" in scan.rejected[0].reason


@pytest.mark.parametrize(
    "line,reason",
    [
        ("52,1,10,1", "action id 52 is outside 1-51"),
        ("0,1,10,1", "action id 0 is outside 1-51"),
        ("3,-5,10,1", "start frame -5 is negative"),
        ("3,abc,10,1", "expected action_id,start_frame,end_frame,confidence"),
        ("3,10", "expected action_id,start_frame,end_frame,confidence"),
    ],
)
def test_bad_label_lines(tmp_path, line, reason):
    scan = read_label_file(write(tmp_path / "0100-M.txt", f"1,0,5,1\n{line}\n"))
    assert len(scan.samples) == 1 and len(scan.rejected) == 1
    assert reason in scan.rejected[0].reason and "0100-M.txt" in scan.rejected[0].reason


def test_windows_line_endings_spaces_and_blank_lines(tmp_path):
    scan = read_label_file(write(tmp_path / "0002-R.txt", "1, 10, 20, 1\r\n\r\n2,30,40,1\r\n"))
    assert [s.sample_id for s in scan.samples] == ["0002-R-A01-N01", "0002-R-A02-N02"]


def test_scan_rejects_bad_ids_and_missing_label_files(tmp_path):
    write(tmp_path / "0002-L.txt", "1,0,5,1\n")
    scan = scan_names("pku_mmd", ["0002-L", "0003-M.avi", "0002-X", "2-L"], labels_dir=tmp_path)
    assert [s.sample_id for s in scan.samples] == ["0002-L-A01-N01"]
    reasons = [r.reason for r in scan.rejected]
    assert "no label file" in reasons[0] and "0003-M.txt" in reasons[0]
    assert "is not a PKU-MMD video id" in reasons[1] and "is not a PKU-MMD video id" in reasons[2]


def test_names_without_label_folder_is_an_error():
    with pytest.raises(EpamError, match="--labels DIR"):
        scan_names("pku_mmd", ["0002-L"])


def test_video_and_sample_ids():
    assert parse_video_id("/x/0002-L.avi") == "0002-L"
    assert parse_video_id("0002-L.txt") == "0002-L"
    sample = parse_pku_sample_id("0291-M-A26-N07")
    assert (sample.video, sample.label, sample.view) == ("0291-M", 25, "M")
    with pytest.raises(NameParseError):
        parse_pku_sample_id("0291-M-A52-N07")
    with pytest.raises(NameParseError):
        parse_pku_sample_id("0291-M")


def test_split_file_in_the_shipped_format(tmp_path):
    # Trailing ", " after the training ids and "," after the validation ids, as in the release.
    path = write(
        tmp_path / "cross-view.txt",
        "Training videos: \n0002-L, 0002-R, 0003-L, \nValidataion videos: \n0002-M, 0003-M,\n",
    )
    assert read_split_file(path) == {
        "train": frozenset({"0002-L", "0002-R", "0003-L"}),
        "test": frozenset({"0002-M", "0003-M"}),
    }


@pytest.mark.parametrize(
    "text,message",
    [
        ("0002-L\n", "ids before a 'Training videos:' line"),
        ("Training videos:\n0002-L\n", "expected a 'Training videos:' and a 'Validataion videos:'"),
        ("Training videos:\n0002-L\nValidation videos:\n0002-L\n", "1 videos are in both lists"),
        ("Training videos:\n0002-L, 2-M\nValidation videos:\n0002-M\n", "'2-M' is not a video id"),
    ],
)
def test_bad_split_files(tmp_path, text, message):
    with pytest.raises(LabelFileError, match=message):
        read_split_file(write(tmp_path / "cross-subject.txt", text))


def test_official_split_files_parse(protocols_dir):
    cs = read_split_file(protocols_dir / "pku_mmd_cross_subject.txt")
    cv = read_split_file(protocols_dir / "pku_mmd_cross_view.txt")
    assert (len(cs["train"]), len(cs["test"])) == (944, 132)
    assert (len(cv["train"]), len(cv["test"])) == (717, 359)
    assert {video[-1] for video in cv["test"]} == {"M"}
