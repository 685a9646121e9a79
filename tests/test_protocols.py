"""The shipped protocol facts agree with the official sources in ../shared (class names, split
ids)."""

import pytest
from conftest import read_shared_csv

from epam_data.errors import ProtocolError
from epam_data.protocols import DATASETS, class_names, load_protocols


@pytest.mark.parametrize(
    "dataset,count", [("ntu60", 60), ("ntu120", 120), ("pku_mmd", 51), ("toyota", 31)]
)
def test_class_counts(dataset, count):
    assert len(class_names(dataset)) == count
    assert len(set(class_names(dataset))) == count


def test_ntu60_classes_are_the_first_60_of_ntu120():
    assert class_names("ntu60") == class_names("ntu120")[:60]


@pytest.mark.parametrize("dataset", DATASETS)
def test_protocol_splits_are_disjoint(dataset):
    for protocol in load_protocols(dataset).values():
        for rule in (protocol, protocol.fallback):
            if rule is None:
                continue
            seen = set()
            for ids in rule.splits.values():
                assert not seen & ids, f"{dataset} {protocol.name} splits overlap"
                seen |= ids
            assert not seen & rule.unused


def test_ntu_protocols_cover_every_id():
    ntu60, ntu120 = load_protocols("ntu60"), load_protocols("ntu120")
    assert set().union(*ntu60["xsub"].splits.values()) == set(range(1, 41))
    assert len(ntu60["xsub"].splits["train"]) == 20
    assert set().union(*ntu120["xsub"].splits.values()) == set(range(1, 107))
    assert len(ntu120["xsub"].splits["train"]) == 53
    assert ntu60["xsub"].splits["train"] < ntu120["xsub"].splits["train"]
    assert ntu120["xset"].splits["train"] == set(range(2, 33, 2))
    assert ntu120["xset"].splits["test"] == set(range(1, 32, 2))
    assert ntu60["xview"].splits == {"train": {2, 3}, "test": {1}}


def test_toyota_protocols_cover_the_18_subjects_and_7_cameras():
    toyota = load_protocols("toyota")
    assert set().union(*toyota["cs"].splits.values()) == {2, 3, 4, 6, 7, *range(9, 21), 25}
    assert toyota["cs"].splits["val"] == {19, 25}
    assert set().union(*toyota["cv1"].splits.values()) | toyota["cv1"].unused == set(range(1, 8))
    assert set().union(*toyota["cv2"].splits.values()) == {1, 2, 3, 4, 5, 6, 7}


def test_unknown_dataset():
    with pytest.raises(ProtocolError, match="unknown dataset 'kinetics'"):
        load_protocols("kinetics")


@pytest.mark.parametrize(
    "dataset,file,column",
    [
        ("ntu120", "ntu120_classes.csv", "name"),
        ("pku_mmd", "pku_mmd_classes.csv", "name"),
        ("toyota", "toyota_classes_cs.csv", "name"),
    ],
)
def test_class_names_match_the_official_lists(protocols_dir, dataset, file, column):
    rows = sorted(read_shared_csv(protocols_dir / file), key=lambda row: int(row["label"]))
    assert list(class_names(dataset)) == [row[column] for row in rows]


def test_toyota_cv_classes_match_the_official_list(protocols_dir):
    rows = read_shared_csv(protocols_dir / "toyota_classes_cv.csv")
    assert list(class_names("toyota", "cv1")) == [row["name"] for row in rows]
    assert class_names("toyota", "cv1") == class_names("toyota", "cv2")


def test_ntu_split_ids_match_the_official_rules(protocols_dir):
    for row in read_shared_csv(protocols_dir / "ntu_split_rules.csv"):
        protocol = load_protocols(row["dataset"])[row["benchmark"]]
        assert protocol.splits["train"] == {int(i) for i in row["train_ids"].split()}
        assert protocol.splits["test"] == {int(i) for i in row["test_ids"].split()}


def test_toyota_split_ids_match_the_generator(protocols_dir):
    parts = {"train": "train", "validation": "val", "test": "test"}
    for row in read_shared_csv(protocols_dir / "toyota_split_facts.csv"):
        protocol = load_protocols("toyota")[row["protocol"].lower()]
        assert protocol.key == row["key"]
        assert protocol.splits[parts[row["part"]]] == {int(i) for i in row["ids"].split()}
        assert len(protocol.classes) == int(row["classes"])
