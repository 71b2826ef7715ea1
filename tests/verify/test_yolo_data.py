import numpy as np
import pytest

from edgeprune.errors import DataError
from edgeprune.verify.yolo_data import YoloDataset, label_path_for
from tests.conftest import asset


def test_coco128_yaml_resolves_its_relative_root_and_labels():
    data = YoloDataset.from_yaml(asset("datasets/yaml/coco128.yaml"))
    assert data.root.name == "coco128" and len(data.images) == 128 and len(data.names) == 80
    labels = data.labels(data.images[0])
    assert labels.shape[1] == 5 and (labels[:, 1:] >= 0).all() and (labels[:, 1:] <= 1).all()
    assert sum(len(data.labels(i)) for i in data.images) == 929  # boxes in COCO128's label files


def test_label_path_rule_matches_ultralytics():
    from ultralytics.data.utils import img2label_paths

    image = "/d/images/train2017/images/x.jpg"
    assert str(label_path_for(__import__("pathlib").Path(image))) == img2label_paths([image])[0]


def _dataset(tmp_path, label_text, yaml_text=None):
    (tmp_path / "images" / "val").mkdir(parents=True)
    (tmp_path / "labels" / "val").mkdir(parents=True)
    (tmp_path / "images" / "val" / "a.jpg").write_bytes(b"")
    (tmp_path / "labels" / "val" / "a.txt").write_text(label_text)
    (tmp_path / "d.yaml").write_text(yaml_text or f"path: {tmp_path}\nval: images/val\nnames: [cat, dog]\n")
    return YoloDataset.from_yaml(tmp_path / "d.yaml")


def test_segment_rows_become_their_bounding_box(tmp_path):
    data = _dataset(tmp_path, "1 0.1 0.2 0.5 0.2 0.3 0.6\n")
    np.testing.assert_allclose(data.labels(data.images[0]), [[1, 0.3, 0.4, 0.4, 0.4]])


@pytest.mark.parametrize(
    "text, message",
    [
        ("0 0.5 0.5 0.1\n", "line 1 has 4 values"),
        ("0 0.5 x 0.1 0.1\n", "line 1 is not numbers"),
        ("\n7 0.5 0.5 0.1 0.1\n", "line 2: class 7 is not one of the 2 names"),
    ],
)
def test_malformed_labels_name_file_and_line(tmp_path, text, message):
    data = _dataset(tmp_path, text)
    with pytest.raises(DataError, match=message):
        data.labels(data.images[0])


def test_missing_root_and_empty_split_are_named(tmp_path):
    (tmp_path / "d.yaml").write_text("path: nowhere\nval: images\nnames: [a]\n")
    with pytest.raises(DataError, match="dataset root 'nowhere'.*not found"):
        YoloDataset.from_yaml(tmp_path / "d.yaml")
    (tmp_path / "images").mkdir()
    (tmp_path / "e.yaml").write_text(f"path: {tmp_path}\nval: images\nnames: [a]\n")
    with pytest.raises(DataError, match="has no images"):
        YoloDataset.from_yaml(tmp_path / "e.yaml")
    (tmp_path / "f.yaml").write_text("names: [a]\n")
    with pytest.raises(DataError, match="lacks 'val'"):
        YoloDataset.from_yaml(tmp_path / "f.yaml")


VALID = "path: {tmp}\nval: images/val\n"


@pytest.mark.parametrize("yaml_text, message", [
    (VALID + "names: 5\n", r"'names' is 5 \(int\); expected a list of class names"),
    (VALID + "names: {a: cat, b: dog}\n", r"'names' has keys \['a', 'b'\].*integer keys 0..n-1"),
    (VALID + "names: {0: cat, 2: dog}\n", r"'names' has keys \[0, 2\]"),
    (VALID + "names: [yes, dog]\n", r"class 0 in 'names' is True \(bool\).*quote it"),
    (VALID + "names: [[cat], dog]\n", r"class 0 in 'names' is \['cat'\] \(list\)"),
    (VALID + "names: []\n", r"'names' is empty"),
    (VALID + "names: [cat, dog]\nnc: 3\n", r"nc is 3 but 'names' has 2 classes"),
    (VALID + "names: [cat, dog]\nnc: two\n", r"nc is 'two' but 'names' has 2 classes"),
    ("path: 5\nval: images/val\nnames: [cat, dog]\n", r"'path' is 5 \(int\); expected the dataset's directory"),
    ("path: {tmp}\nval: 5\nnames: [cat, dog]\n", r"'val' holds 5; expected an image directory"),
    ("path: {tmp}\nval: [images/val, 3]\nnames: [cat, dog]\n", r"'val' holds 3"),
])  # fmt: skip
def test_malformed_yaml_fields_are_named(tmp_path, yaml_text, message):
    with pytest.raises(DataError, match=message):
        _dataset(tmp_path, "0 0.5 0.5 0.1 0.1\n", yaml_text.replace("{tmp}", str(tmp_path)))


def test_names_mapping_and_numbers_read_as_ultralytics_reads_them(tmp_path):
    data = _dataset(
        tmp_path, "1 0.5 0.5 0.1 0.1\n", f"path: {tmp_path}\nval: [images/val]\nnames: {{1: dog, 0: 7}}\nnc: 2\n"
    )
    assert data.names == ("7", "dog")


@pytest.mark.parametrize(
    "text, message",
    [
        ("0 1.5 0.5 0.1 0.1\n", r"line 1: coordinate 1.5 is outside 0..1"),
        ("0 0.5 0.5 0.1 0.1\n0 0.5 -0.01 0.1 0.1\n", r"a.txt line 2: coordinate -0.01 is outside 0..1"),
        ("0 0.5 nan 0.1 0.1\n", r"line 1: coordinate nan is outside 0..1"),
        ("1 0.1 0.2 0.5 0.2 0.3 1.6\n", r"line 1: coordinate 1.6 is outside 0..1"),  # a segment's point
        ("0.5 0.5 0.1\n", r"line 1 has 3 values"),
    ],
)
def test_labels_outside_the_image_or_malformed_name_file_and_line(tmp_path, text, message):
    data = _dataset(tmp_path, text)
    with pytest.raises(DataError, match=message):
        data.labels(data.images[0])


def _images(tmp_path, labels: dict[str, str]):
    """Three images a, b, c; `labels` maps some of them to their label file's text."""
    (tmp_path / "images").mkdir(parents=True)
    (tmp_path / "labels").mkdir()
    for name in "abc":
        (tmp_path / "images" / f"{name}.jpg").write_bytes(b"")
    for name, text in labels.items():
        (tmp_path / "labels" / f"{name}.txt").write_text(text)
    (tmp_path / "d.yaml").write_text(f"path: {tmp_path}\nval: images\nnames: [cat]\n")
    return YoloDataset.from_yaml(tmp_path / "d.yaml")


def test_a_split_without_labels_or_boxes_is_refused_and_background_images_are_counted(tmp_path):
    with pytest.raises(DataError, match=r"none of the 3 images .* has a label file \(e.g. .*labels/a.txt does not"):
        _images(tmp_path / "none", {}).checked(1)
    with pytest.raises(DataError, match="label files of the 3 images .* hold no box"):
        _images(tmp_path / "empty", {"a": "", "b": "\n"}).checked(1)
    partial = _images(tmp_path / "partial", {"b": "0 0.5 0.5 0.2 0.2\n"})
    assert partial.unlabelled is None and partial.checked(1).unlabelled == 2
    with pytest.raises(DataError, match="none of the 2 images"):  # the images a --limit picks are what counts
        partial.subset(2).checked(1)
    with pytest.raises(DataError, match="d.yaml has 1 classes and the model predicts 80"):
        partial.checked(80)  # before any label line is read against the wrong names


def test_checked_reads_every_label_file_not_only_the_first_with_boxes(tmp_path):
    data = _images(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n", "c": "0 0.5 0.5 0.2 0.2\n0 2 0.5 0.2 0.2\n"})
    with pytest.raises(DataError, match=r"c.txt line 2: coordinate 2 is outside"):
        data.checked(1)
