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


@pytest.mark.parametrize("text, message", [
    ("0 0.5 0.5 0.1\n", "line 1 has 4 values"),
    ("0 0.5 x 0.1 0.1\n", "line 1 is not numbers"),
    ("\n7 0.5 0.5 0.1 0.1\n", "line 2: class 7 is not one of the 2 names"),
])
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
