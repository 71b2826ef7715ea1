import pytest

from edgeprune.errors import ModelError, UnknownName
from edgeprune.models import load_model


def test_nonexistent_path_is_named():
    with pytest.raises(ModelError, match="model file not found: /no/such/model.pt"):
        load_model("/no/such/model.pt")


def test_existing_file_of_an_unsupported_kind_says_what_is_supported(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"\0")
    with pytest.raises(ModelError, match="not a format edgeprune loads yet.*torchvision:<name>"):
        load_model(str(path))


def test_unknown_family_suggests():
    with pytest.raises(UnknownName, match="did you mean 'torchvision'"):
        load_model("torchvison:resnet18")


def test_family_without_name():
    with pytest.raises(ModelError, match="names no model"):
        load_model("cifar:")
