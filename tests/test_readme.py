"""The README's quoted quick-start figures are the recorded run's, and its quick-start command is what that run ran."""

from __future__ import annotations

import importlib.util
import json
import shlex
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_quoted_figures_are_the_recorded_runs():
    figures = _script("readme_figures")
    record = json.loads(figures.RECORD.read_text())
    assert figures.readme_block((ROOT / "README.md").read_text()) == figures.render(record), (
        "README.md's quick-start figures differ from benchmarks/results/quickstart.json: "
        "run benchmarks/readme_figures.py --write"
    )
    stale = figures.changed_since(record["commit"])
    if stale:  # a warning, not a failure: a rerun takes the quick start's ~10 minutes, not a test's
        warnings.warn(f"planning code changed since the quick start was recorded ({record['commit']}): "
                      f"{', '.join(stale)}; rerun benchmarks/quickstart.py", stacklevel=1)  # fmt: skip


def test_the_recorded_run_ran_the_readmes_command():
    quickstart = _script("quickstart")
    arguments = quickstart.readme_build_command((ROOT / "README.md").read_text())
    assert arguments[0] == "build" and "--out" in arguments
    record = json.loads(quickstart.RECORD.read_text())
    assert record["command"] == "edgeprune " + shlex.join(arguments), "rerun benchmarks/quickstart.py"
