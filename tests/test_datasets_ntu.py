import re

import pytest

from epam_data.datasets import normalize_name, scan_names
from epam_data.datasets.ntu import MUTUAL_ACTIONS, is_mutual_action, parse_ntu_name
from epam_data.errors import NameParseError


@pytest.mark.parametrize(
    "name",
    [
        "S001C002P003R002A013",
        "S001C002P003R002A013_rgb.avi",
        "/data/nturgb+d_rgb/S001C002P003R002A013_rgb.avi",
        "S001C002P003R002A013.mp4",
        "S001C002P003R002A013.MKV",
        "  S001C002P003R002A013_rgb.avi\n",
    ],
)
def test_ntu_name_forms_give_one_sample_id(name):
    sample = parse_ntu_name(name, "ntu60")
    assert sample.sample_id == "S001C002P003R002A013"
    assert (sample.setup, sample.camera, sample.subject, sample.replication) == (1, 2, 3, 2)
    assert sample.label == 12 and sample.label_name == "tear up paper"


@pytest.mark.parametrize(
    "dataset,name,label,label_name",
    [
        ("ntu60", "S017C003P020R002A060", 59, "walking apart from each other"),
        (
            "ntu120",
            "S032C003P106R002A120",
            119,
            "finger-guessing game (playing rock-paper-scissors)",
        ),
        ("ntu120", "S018C001P045R001A061", 60, "put on headphone"),
    ],
)
def test_ntu_labels_are_action_minus_one(dataset, name, label, label_name):
    sample = parse_ntu_name(name, dataset)
    assert (sample.label, sample.label_name) == (label, label_name)


@pytest.mark.parametrize(
    "name,message",
    [
        ("S018C001P001R001A001", "setup 18 is outside ntu60 (1-17); it belongs to NTU RGB+D 120"),
        ("S001C001P041R001A001", "performer 41 is outside ntu60"),
        ("S001C001P001R001A061", "action 61 is outside ntu60"),
        ("S001C004P001R001A001", "camera 4 is outside ntu60 (1-3)"),
        ("S001C001P001R003A001", "replication 3"),
        ("S001C001P001R001A000", "action 0"),
        ("S01C001P001R001A001", "is not an NTU name"),
        ("S001C001P001R001A001_depth.avi", "is not an NTU name"),
        ("", "is not an NTU name"),
    ],
)
def test_ntu60_rejects_with_reason(name, message):
    with pytest.raises(NameParseError, match=re.escape(message)):
        parse_ntu_name(name, "ntu60")


def test_ntu120_limits():
    with pytest.raises(NameParseError, match="setup 33 is outside ntu120"):
        parse_ntu_name("S033C001P001R001A001", "ntu120")
    with pytest.raises(NameParseError, match="action 121"):
        parse_ntu_name("S001C001P001R001A121", "ntu120")
    with pytest.raises(NameParseError, match="outside ntu120 \\(1-120\\)$"):
        parse_ntu_name("S001C001P001R001A121", "ntu120")


def test_mutual_actions_are_the_26_two_person_classes():
    assert sorted(MUTUAL_ACTIONS) == [*range(50, 61), *range(106, 121)]
    assert (
        is_mutual_action(50)
        and is_mutual_action(60)
        and is_mutual_action(106)
        and is_mutual_action(120)
    )
    assert not is_mutual_action(49) and not is_mutual_action(61) and not is_mutual_action(105)


def test_scan_keeps_order_and_lists_every_rejected_name():
    names = [
        "S001C001P001R001A001_rgb.avi",
        "bad",
        "S001C001P001R001A002",
        "S001C001P001R001A001.mp4",
    ]
    scan = scan_names("ntu60", names)
    assert [s.sample_id for s in scan.samples] == [
        "S001C001P001R001A001",
        "S001C001P001R001A002",
        "S001C001P001R001A001",
    ]
    assert [r.name for r in scan.rejected] == ["bad"]


def test_normalize_name_strips_path_extension_and_rgb_suffix():
    assert normalize_name("x/S001C001P001R001A001_rgb.avi") == "S001C001P001R001A001"
    assert normalize_name("S001C001P001R001A001") == "S001C001P001R001A001"
    assert normalize_name("0002-L") == "0002-L"
