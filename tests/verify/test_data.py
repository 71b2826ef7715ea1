import numpy as np
import pytest
from PIL import Image
from torchvision import transforms

from edgeprune.errors import DataError
from edgeprune.models import load_model
from edgeprune.types import Preprocessing
from edgeprune.verify.data import ImageFolder, load_image
from tests.conftest import asset


def _write_images(root, layout):
    rng = np.random.default_rng(0)
    for relative in layout:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path)


def test_labels_follow_the_models_class_names(tmp_path):
    _write_images(tmp_path, ["truck/a.png", "cat/b.png", "cat/c.jpg"])
    data = ImageFolder.scan(
        tmp_path, class_names=["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    )
    assert sorted(label for _, label in data.samples) == [3, 3, 9]


def test_without_class_names_labels_are_sorted_folder_order(tmp_path):
    _write_images(tmp_path, ["b/1.png", "a/1.png"])
    assert {p.parent.name: label for p, label in ImageFolder.scan(tmp_path).samples} == {"a": 0, "b": 1}


@pytest.mark.parametrize(
    "layout, message",
    [
        ([], "has no images"),
        (["loose.png"], "1 images directly in it and no class folders"),
    ],
)
def test_wrong_layout_is_named(tmp_path, layout, message):
    _write_images(tmp_path, layout)
    with pytest.raises(DataError, match=message):
        ImageFolder.scan(tmp_path)


def test_more_classes_than_outputs_is_an_error(tmp_path):
    _write_images(tmp_path, ["a/1.png", "b/1.png", "c/1.png"])
    with pytest.raises(DataError, match="3 classes but the model has 2 outputs"):
        ImageFolder.scan(tmp_path, num_outputs=2)


def test_missing_directory_and_file_instead_of_directory(tmp_path):
    with pytest.raises(DataError, match="not found"):
        ImageFolder.scan(tmp_path / "nope")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(DataError, match="is a file"):
        ImageFolder.scan(tmp_path / "f.txt")


def test_unreadable_image_is_named(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "broken.jpg").write_bytes(b"not a jpeg")
    data = ImageFolder.scan(tmp_path)
    with pytest.raises(DataError, match="cannot read image .*broken.jpg"):
        next(data.batches(Preprocessing(crop=(8, 8)), 4))


def test_subset_spreads_over_classes(tmp_path):
    _write_images(tmp_path, [f"{c}/{i}.png" for c in "abcd" for i in range(5)])
    subset = ImageFolder.scan(tmp_path).subset(4)
    assert sorted(label for _, label in subset.samples) == [0, 1, 2, 3]


def test_preprocessing_equals_torchvisions_eval_transform():
    image_path = asset("images/ultralytics_assets/bus.jpg")
    model = load_model("torchvision:resnet18")
    reference = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )(Image.open(image_path).convert("RGB")).numpy()
    ours = load_image(image_path, model.preprocessing)
    assert ours.shape == (3, 224, 224)
    assert np.abs(ours - reference).max() < 1e-5


def test_nhwc_and_bgr_layouts(tmp_path):
    _write_images(tmp_path, ["a/1.png"])
    path = tmp_path / "a" / "1.png"
    nchw = load_image(path, Preprocessing(crop=(40, 48)))
    nhwc_bgr = load_image(path, Preprocessing(crop=(40, 48), layout="NHWC", channel_order="BGR"))
    assert np.array_equal(nhwc_bgr, nchw[::-1].transpose(1, 2, 0))
