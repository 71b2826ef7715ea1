import sys
import textwrap

import pytest
import torch

from edgeprune.errors import ModelError, UnknownName
from edgeprune.models import LoadOptions, load_model


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    package = tmp_path / "usernets"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "declared.py").write_text(textwrap.dedent("""
        import torch
        edgeprune_input = {"shape": (1, 1, 28, 28), "mean": (0.1307,), "std": (0.3081,), "class_names": list("0123456789")}
        def build():
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
        def not_a_model():
            return 42
    """))
    (package / "bare.py").write_text("import torch\ndef build():\n    return torch.nn.Conv2d(3, 4, 3)\n")
    monkeypatch.chdir(tmp_path)
    yield
    for name in [m for m in sys.modules if m.startswith("usernets")]:
        del sys.modules[name]


def test_declared_input_and_preprocessing_are_used(user_package):
    model = load_model("python:usernets.declared:build")
    assert model.inputs[0].shape == ("batch", 1, 28, 28)
    assert model.preprocessing.mean == (0.1307,) and model.class_names[3] == "3"
    assert model.module(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_input_shape_flag_serves_undeclared_models(user_package):
    model = load_model("python:usernets.bare:build", LoadOptions(input_shape=(1, 3, 16, 16)))
    assert model.inputs[0].concrete_shape(5) == (5, 3, 16, 16)


def test_undeclared_input_asks_for_input_shape(user_package):
    with pytest.raises(ModelError, match="--input-shape"):
        load_model("python:usernets.bare:build")


def test_bad_python_specs(user_package):
    with pytest.raises(ModelError, match="cannot import"):
        load_model("python:usernets.missing:build")
    with pytest.raises(UnknownName, match="did you mean 'build'"):
        load_model("python:usernets.declared:buidl")
    with pytest.raises(ModelError, match="returned int"):
        load_model("python:usernets.declared:not_a_model")
    with pytest.raises(ModelError, match="incomplete"):
        load_model("python:usernets.declared")
