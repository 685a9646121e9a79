import pytest

from epam_data.datasets import scan_generic
from epam_data.datasets.generic import generic_sample_id
from epam_data.errors import LabelFileError


def test_folder_per_class(tmp_path):
    for relative in [
        "walk/a.mp4",
        "walk/b.avi",
        "jump/c.MP4",
        "jump/notes.txt",
        "loose.mp4",
        "jump/deep/d.mp4",
        "walk/.DS_Store",
    ]:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"")
    scan = scan_generic(tmp_path)
    assert [(s.sample_id, s.label, s.label_name) for s in scan.samples] == [
        ("jump__c", 0, "jump"),
        ("walk__a", 1, "walk"),
        ("walk__b", 1, "walk"),
    ]
    assert sorted(r.name for r in scan.rejected) == [
        "jump/deep/d.mp4",
        "jump/notes.txt",
        "loose.mp4",
    ]


def test_csv_with_integer_labels(tmp_path):
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("path,label\nvideos/x.mp4,3\nvideos/y.mp4,0\n,1\nvideos/x.avi,2\n")
    scan = scan_generic(csv_path)
    assert [(s.sample_id, s.label, s.path) for s in scan.samples] == [
        ("videos__x", 3, "videos/x.mp4"),
        ("videos__y", 0, "videos/y.mp4"),
    ]
    reasons = " | ".join(r.reason for r in scan.rejected)
    assert "line 4: empty path or label" in reasons and "same sample id 'videos__x'" in reasons


def test_csv_with_class_names_numbers_them_alphabetically(tmp_path):
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("path,label\nb.mp4,walk\na.mp4,jump\nc.mp4,walk\n")
    scan = scan_generic(csv_path)
    assert [(s.sample_id, s.label) for s in scan.samples] == [("b", 1), ("a", 0), ("c", 1)]


def test_csv_without_header_is_an_error(tmp_path):
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("a.mp4,1\n")
    with pytest.raises(LabelFileError, match="needs a header with columns path,label"):
        scan_generic(csv_path)


def test_sample_id_is_flat():
    assert generic_sample_id("a/b/c.mp4") == "a__b__c"
    assert generic_sample_id("c.tar") == "c.tar"
