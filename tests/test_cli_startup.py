"""The command line as a user first meets it: `--help`, `targets` and usage errors answer without importing the
toolchains (torch alone takes seconds to import), and the help text reads right."""

import subprocess
import sys

import click
import pytest

from edgeprune.cli import app
from edgeprune.models import SPEC_FORMS
from edgeprune.models.family import FAMILIES, SUFFIX_FAMILIES
from tests.conftest import run_cli

TOOLCHAINS = (
    "torch",
    "numpy",
    "onnx",
    "onnxruntime",
    "openvino",
    "nncf",
    "ultralytics",
    "matplotlib",
    "tensorflow",
    "ai_edge_litert",
)

# runs `edgeprune ARGV` through `main` in a fresh interpreter, then prints the top-level packages it imported
_PROBE = """
import sys
from edgeprune.cli import main
sys.argv = ["edgeprune", *sys.argv[1:]]
try:
    main()
except SystemExit as exit:
    code = exit.code
print("\\nexit", code, "imported", *sorted({name.split(".")[0] for name in sys.modules}))
"""


def imported_by(*argv: str) -> tuple[int, set[str]]:
    """The exit code of `edgeprune ARGV` and the top-level packages imported by the time it answered."""
    proc = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=120)
    last = proc.stdout.strip().splitlines()[-1].split()
    assert last[0] == "exit" and last[2] == "imported", proc.stdout + proc.stderr
    return int(last[1]), set(last[3:])


def test_importing_the_cli_imports_no_toolchain():
    code = "import sys, edgeprune.cli; print(*sorted({name.split('.')[0] for name in sys.modules}))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert not set(proc.stdout.split()) & set(TOOLCHAINS)


ANSWERED_WITHOUT_TOOLCHAINS = {
    "help": (["--help"], 0),
    **{f"{name} help": ([name, "--help"], 0) for name in app.commands},
    "version": (["--version"], 0),
    "targets": (["targets"], 0),
    "unknown option": (["export", "--no-such-option"], 2),
    "missing required option": (["export"], 2),
    "bad choice": (["export", "--model", "cifar:resnet20", "--format", "coreml"], 2),
    "bad runtime": (["verify", "--model", "cifar:resnet20", "--data", ".", "--runtime", "tensorflow"], 2),
}


@pytest.mark.parametrize("case", ANSWERED_WITHOUT_TOOLCHAINS)
def test_answered_without_importing_a_toolchain(case):
    argv, expected_code = ANSWERED_WITHOUT_TOOLCHAINS[case]
    code, imported = imported_by(*argv)
    assert code == expected_code
    assert not imported & set(TOOLCHAINS), f"edgeprune {' '.join(argv)} imported {sorted(imported & set(TOOLCHAINS))}"


def test_the_probe_sees_a_toolchain_that_a_command_imports():
    # guards the tests above against a probe that sees nothing: a command that loads a model imports torch
    code, imported = imported_by("export", "--model", "cifar:not-a-resnet", "--out", "/nonexistent/never-written")
    assert code == 2 and "torch" in imported


def _help_texts() -> dict[str, str]:
    return {name: run_cli(name, "--help").stdout for name in app.commands}


def test_help_has_no_doubled_percent_signs():
    for name, text in _help_texts().items():
        assert "%%" not in text, f"edgeprune {name} --help: {text[text.index('%%') - 40 :][:80]!r}"


def test_spec_forms_name_every_kind_of_spec_the_loader_accepts():
    for family in FAMILIES:
        suffixes = [suffix for suffix, owner in SUFFIX_FAMILIES.items() if owner == family]
        assert f"{family}:" in SPEC_FORMS or any(s in SPEC_FORMS for s in suffixes), family
    for suffix in SUFFIX_FAMILIES:
        assert suffix in SPEC_FORMS
    assert "saved pruned model directory" in SPEC_FORMS and "edgeprune:" in SPEC_FORMS


@pytest.mark.parametrize("command", [c for c in app.commands.values() if any(p.name == "model" for p in c.params)],
                         ids=lambda c: c.name)  # fmt: skip
def test_model_help_is_the_spec_forms(command):
    option = next(p for p in command.params if isinstance(p, click.Option) and p.name == "model")
    assert SPEC_FORMS in option.help
