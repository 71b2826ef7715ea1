import pytest
import torch
from safetensors.torch import save_file

from edgeprune.errors import ModelError, UnknownName
from edgeprune.models import LoadOptions, load_model


def test_preprocessing_comes_from_torchvisions_published_transform():
    inception = load_model("torchvision:inception_v3")
    assert inception.preprocessing.crop == (299, 299) and inception.preprocessing.resize == 342
    assert inception.inputs[0].shape == ("batch", 3, 299, 299)
    effnet = load_model("torchvision:efficientnet_b3")
    assert effnet.preprocessing.interpolation == "bicubic"
    assert load_model("torchvision:resnet18").preprocessing.mean == (0.485, 0.456, 0.406)


def test_hub_weights_are_refused_offline_with_the_url():
    with pytest.raises(ModelError, match=r"never downloads.*download\.pytorch\.org/models/resnet18"):
        load_model("torchvision:resnet18", LoadOptions(weights="DEFAULT"))


def test_unknown_name_suggests_a_close_one():
    with pytest.raises(UnknownName, match="did you mean 'resnet18'"):
        load_model("torchvision:resnet81")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_weights_file_loads(tmp_path, suffix):
    source = load_model("torchvision:squeezenet1_1").module
    state = {k: v + 0.5 if v.is_floating_point() else v for k, v in source.state_dict().items()}
    path = tmp_path / f"w{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    loaded = load_model("torchvision:squeezenet1_1", LoadOptions(weights=str(path)))
    assert all(torch.equal(loaded.module.state_dict()[k], v) for k, v in state.items())
    assert loaded.fingerprint != load_model("torchvision:squeezenet1_1").fingerprint


def test_missing_weights_file():
    with pytest.raises(ModelError, match="weights file not found"):
        load_model("torchvision:resnet18", LoadOptions(weights="/nonexistent/resnet18.pth"))


def test_a_vit_is_built_for_its_published_input_size():
    """vit_h_14's published weights are for 518² inputs; built at torchvision's 224² default they would not load."""
    model = load_model("torchvision:vit_h_14")
    assert model.inputs[0].shape[-2:] == (518, 518) == (model.module.image_size,) * 2
    assert model.module.encoder.pos_embedding.shape[1] == (518 // 14) ** 2 + 1
