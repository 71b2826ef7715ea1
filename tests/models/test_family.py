"""Model families: one hook object per family module, found by name, kept by a saved pruned model."""

import json

import pytest

from edgeprune.errors import ModelError, UnknownName
from edgeprune.models import FAMILIES, LoadedModel, load_model
from edgeprune.models.base import image_input
from edgeprune.models.family import family_named, family_of_spec
from edgeprune.models.saved import FAMILY_KEY, PLAN_FILE, save_pruned


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_module_holds_its_hooks_under_its_name(name):
    assert family_named(name).name == name


def test_an_unknown_family_is_refused_by_name():
    with pytest.raises(UnknownName, match="model family"):
        family_named("caffe")


def test_a_hand_built_model_gets_the_family_its_spec_names():
    assert family_of_spec("darknet:x.cfg").name == "darknet" and family_of_spec("yolov8n.yaml").name == "ultralytics"
    assert family_of_spec("edgeprune:some/dir").name == "python"  # any structure: every hook tries what it knows
    model = LoadedModel(load_model("cifar:resnet20").module, "cifar:resnet20", "classification", image_input(32, 32),
                        None)  # fmt: skip
    assert model.family is family_named("cifar")


def test_the_family_survives_a_save_and_an_older_folder_gets_its_base_models(tmp_path):
    from edgeprune.prune.channels import prune_channels

    model = load_model("cifar:resnet20")
    save_pruned(model, prune_channels(model, 0.2, "l1"), tmp_path)
    saved = json.loads((tmp_path / PLAN_FILE).read_text())
    assert saved[FAMILY_KEY] == "cifar"
    reloaded = load_model(str(tmp_path))
    assert reloaded.spec == f"edgeprune:{tmp_path}" and reloaded.family is family_named("cifar")

    del saved[FAMILY_KEY]  # a folder saved before families were recorded
    (tmp_path / PLAN_FILE).write_text(json.dumps(saved))
    assert load_model(str(tmp_path)).family is family_named("cifar")

    (tmp_path / PLAN_FILE).write_text(json.dumps({**saved, FAMILY_KEY: "darknet"}))
    with pytest.raises(ModelError, match="names model family 'darknet', but its base model loads as a cifar model"):
        load_model(str(tmp_path))
