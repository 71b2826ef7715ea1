import sys
import textwrap

import pytest
import torch

from edgeprune.errors import ModelError, UnknownName
from edgeprune.models import LoadOptions, load_model
from tests.conftest import run_cli


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    package = tmp_path / "usernets"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "declared.py").write_text(
        textwrap.dedent("""
        import torch
        edgeprune_input = {"shape": (1, 1, 28, 28), "mean": (0.1307,), "std": (0.3081,), "class_names": list("0123456789")}
        def build():
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
        def not_a_model():
            return 42
    """)
    )
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


PAYLOAD = textwrap.dedent("""
    import pathlib
    import torch
    pathlib.Path("PAYLOAD_RAN").touch()  # what a hostile module would do on import: here, leave a mark
    edgeprune_input = {"shape": (1, 3, 16, 16)}
    def make():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                   torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4))
""")


@pytest.fixture
def payload_folder(tmp_path):
    """A pruned model saved by `prune --model python:payload:make`, with payload.py beside its plan."""
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "payload.py").write_text(PAYLOAD)
    result = run_cli("prune", "--model", "python:payload:make", "--ratio", "0.3", "--out", ".", cwd=saved)
    assert result.code == 0, result.stderr
    (saved / "PAYLOAD_RAN").unlink()  # the user named it there: it ran
    yield saved
    sys.modules.pop("payload", None)


def test_a_saved_plan_imports_its_python_base_only_with_trust_code(payload_folder):
    refused = run_cli("export", "--model", ".", "--out", "../out", cwd=payload_folder)
    assert refused.code == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert "names python:payload:make as its base model" in refused.stderr and "--trust-code" in refused.stderr
    assert not (payload_folder / "PAYLOAD_RAN").exists() and not (payload_folder.parent / "out").exists()

    trusted = run_cli("export", "--model", ".", "--trust-code", "--out", "../out", cwd=payload_folder)
    assert trusted.code == 0, trusted.stderr
    assert (payload_folder / "PAYLOAD_RAN").exists() and (payload_folder.parent / "out" / "model.onnx").is_file()


def test_the_base_a_user_named_reloads_without_trust_code(payload_folder, monkeypatch):
    from edgeprune.models.saved import load_pruned

    monkeypatch.chdir(payload_folder)
    with pytest.raises(ModelError, match="--trust-code"):
        load_pruned(".", named_base="python:payload:other")  # a build reloads only the base its user named
    assert not (payload_folder / "PAYLOAD_RAN").exists()
    reloaded = load_pruned(".", named_base="python:payload:make")
    assert reloaded.module(torch.zeros(1, 3, 16, 16)).shape == (1, 4)
