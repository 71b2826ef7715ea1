"""Each set of names has one list, and everything that offers or checks those names agrees with it.

Runtimes, their formats, file types and precisions: edgeprune/runtimes.py (read by the backends, the profiles and
the CLI) and the agent's `RUNTIMES`, which runs on the device without edgeprune and so keeps its own table.
Criteria: prune/criterion_names.py, scored in prune/importance.py `CRITERIA`. Build values and baselines:
types/build.py. Targets: profiles/. These lists import no toolchain, so the CLI builds its choices from them at
start-up; the tests below fail when a list is added to or edited by hand.
"""

import ast
from pathlib import Path

import click
import pytest

from edgeprune import build, types
from edgeprune.backends._registry import backend_names, formats, get_backend
from edgeprune.backends.base import Backend
from edgeprune.build import BASELINES, VALUES
from edgeprune.cli import app
from edgeprune.devices.profiles import PRECISIONS, list_profiles, load_profile, profile_paths
from edgeprune.prune.criterion_names import CRITERION_NAMES, SEEDED_CRITERIA
from edgeprune.prune.importance import CRITERIA
from edgeprune.runtimes import RUNTIMES, runtime_names

ROOT = Path(__file__).resolve().parents[1]


def agent_runtimes() -> list[str]:
    """The keys of the agent's module-level `RUNTIMES` dict, read with `ast` (the agent is not imported: it is a
    device-side script), from whichever targets/agent*.py defines it."""
    found = {}
    for path in sorted((ROOT / "targets").glob("agent*.py")):
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, (ast.Assign, ast.AnnAssign)):
                continue
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "RUNTIMES" for t in targets):
                assert isinstance(node.value, ast.Dict), f"{path.name}: RUNTIMES is not a dict literal"
                found[path.name] = [ast.literal_eval(key) for key in node.value.keys]
    assert len(found) == 1, f"RUNTIMES defined in {sorted(found) or 'no targets/agent*.py'}; expected one file"
    return next(iter(found.values()))


def offered_precisions() -> set[str]:
    return {p for name in backend_names() for p in get_backend(name).precisions}


def test_backends_profiles_and_the_agent_name_the_same_runtimes():
    assert backend_names() == list(runtime_names())
    assert sorted(agent_runtimes()) == sorted(runtime_names())


def test_profiles_accept_exactly_the_precisions_the_backends_declare():
    assert set(PRECISIONS) == offered_precisions()


def test_each_format_names_one_backend():
    assert sorted(formats().values()) == sorted(backend_names())


@pytest.mark.parametrize("name", backend_names())
def test_each_backend_is_registered_under_its_own_name_with_a_tolerance_per_precision(name):
    backend = get_backend(name)
    assert isinstance(backend, Backend) and backend.name == name
    assert backend.default_precision in backend.precisions and set(backend.calibrated) <= set(backend.precisions)
    for precision in backend.precisions:
        assert backend.tolerances(precision).why, f"{name} {precision}: a tolerance without its evidence"


@pytest.mark.parametrize("name", backend_names())
def test_each_backend_declares_what_the_runtimes_list_says(name):
    backend, listed = get_backend(name), RUNTIMES[name]
    assert (backend.format, backend.suffixes, backend.precisions) == (listed.format, listed.suffixes, listed.precisions)
    assert backend.suffix == listed.suffixes[0]


def test_the_scored_criteria_are_the_listed_ones():
    assert list(CRITERIA) == list(CRITERION_NAMES)
    assert [name for name, spec in CRITERIA.items() if spec.seeded] == list(SEEDED_CRITERIA)


def test_the_build_checks_the_values_and_baselines_the_cli_offers():
    assert build.run.BASELINES is types.build.BASELINES and build.run.VALUES is types.build.VALUES


@pytest.mark.parametrize("stem", sorted(profile_paths()))
def test_each_profile_names_known_runtimes_and_is_listed(stem):
    profile = load_profile(stem)
    assert profile.runtime in runtime_names() and set(profile.can_run()) <= set(runtime_names())
    assert stem in [p.name for p in list_profiles()]  # what `edgeprune targets` lists and `--target` accepts


@pytest.mark.parametrize("name", sorted(CRITERIA))
def test_each_criterion_is_offered_by_prune_and_build_unless_it_only_makes_variants(name):
    spec = CRITERIA[name]
    assert spec.name == name and spec.paper
    assert not spec.needs_loss or spec.needs_data  # a loss is computed on data
    for command in ("prune", "build"):
        assert (name in _choices(command, "criterion")) == (not spec.seeded), command


def _option(command: str, name: str) -> click.Option:
    return next(p for p in app.commands[command].params if p.name == name)


def _choices(command: str, name: str) -> list[str]:
    return list(_option(command, name).type.choices)


# (command, option) -> the registry its choices come from; every Choice the CLI has must be listed here
REGISTRY_CHOICES = {
    ("export", "fmt"): lambda: sorted(formats()),
    ("export", "precision"): lambda: sorted(offered_precisions()),
    ("profile", "precision"): lambda: sorted(offered_precisions()),
    ("build", "precision"): lambda: sorted(offered_precisions()),
    ("verify", "runtime"): backend_names,
    ("profile", "runtime"): backend_names,
    ("build", "runtime"): backend_names,
    ("prune", "criterion"): lambda: [n for n, spec in CRITERIA.items() if not spec.seeded],
    ("build", "criterion"): lambda: [n for n, spec in CRITERIA.items() if not spec.seeded],
    ("build", "value"): lambda: list(VALUES),
}


@pytest.mark.parametrize("key", REGISTRY_CHOICES, ids=lambda key: "-".join(key))
def test_cli_choices_are_the_registries(key):
    assert _choices(*key) == REGISTRY_CHOICES[key]()


def test_every_cli_choice_comes_from_a_registry():
    hand_written = [
        (command.name, param.name)
        for command in app.commands.values()
        for param in command.params
        if isinstance(param.type, click.Choice) and (command.name, param.name) not in REGISTRY_CHOICES
    ]
    assert not hand_written, f"build these choices from their registry and add them to REGISTRY_CHOICES: {hand_written}"


def test_build_baselines_help_names_the_baselines():
    assert f"built the same way: {', '.join(BASELINES)}." in _option("build", "baselines").help
