import pytest

from epam_data.datasets import scan_names
from epam_data.datasets.toyota import parse_toyota_name
from epam_data.errors import NameParseError
from epam_data.protocols import class_names


def test_toyota_name_metadata():
    sample = parse_toyota_name("clips/Drink.Fromcup_p17_r02_v09_c01.mp4")
    assert sample.sample_id == "Drink.Fromcup_p17_r02_v09_c01"
    assert (sample.subject, sample.camera, sample.replication) == (17, 1, 2)
    assert sample.label_name == "Drink.Fromcup" and sample.label == 8


def test_toyota_labels_are_alphabetical_with_usetablet_before_usetelephone():
    names = class_names("toyota")
    assert len(names) == 31 and list(names) == sorted(names)
    assert names.index("Usetablet") == 27 and names.index("Usetelephone") == 28
    assert parse_toyota_name("Usetablet_p03_r00_v01_c01.mp4").label == 27


def test_cv_classes_are_a_subset_of_cs_classes():
    cv = class_names("toyota", "cv2")
    assert len(cv) == 19 and set(cv) <= set(class_names("toyota")) and list(cv) == sorted(cv)


def test_pour_fromcup_is_reported_not_labelled():
    scan = scan_names("toyota", ["Pour.Fromcup_p11_r00_v03_c04.mp4", "Walk_p03_r01_v16_c06.mp4"])
    assert [s.sample_id for s in scan.samples] == ["Walk_p03_r01_v16_c06"]
    assert (
        len(scan.rejected) == 1
        and "'Pour.Fromcup' is in none of the Toyota class lists" in scan.rejected[0].reason
    )


@pytest.mark.parametrize(
    "name",
    [
        "Walk_p03_r01_v16.mp4",
        "Walk_03_r01_v16_c06.mp4",
        "_p03_r01_v16_c06.mp4",
        "Walk_p03_r01_v16_cXX.mp4",
    ],
)
def test_bad_toyota_names(name):
    with pytest.raises(NameParseError, match="is not a Toyota Smarthome name"):
        parse_toyota_name(name)
