"""The house rules the code claims, enforced: one formatter and linter, files under ~500 lines, no package cycles."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "edgeprune"
MAX_LINES = 500


@pytest.mark.parametrize("argv", [["format", "--check"], ["check"]], ids=["ruff-format", "ruff-check"])
def test_ruff_passes(argv):
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", *argv, "--no-cache", "."],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if "No module named ruff" in proc.stdout:
        pytest.fail('ruff is not installed: pip install -e ".[test]"')
    assert proc.returncode == 0, proc.stdout


def _sources() -> list[Path]:
    return sorted([*PACKAGE.rglob("*.py"), *(ROOT / "targets").rglob("*.py")])


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_file_is_at_most_500_lines(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines; split it along a seam"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str:
    """The node of the package graph a module belongs to: a subpackage, or a top-level module of edgeprune."""
    return ".".join(module.split(".")[:2])


def _imported(path: Path, module: str) -> set[str]:
    """Every edgeprune module this file imports, at the top or inside a function (a lazy import is still a
    dependency); imports under `if TYPE_CHECKING:` count too."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.add(target)
            # `from edgeprune import build` imports the module edgeprune.build, not only the package
            found.update(
                f"{target}.{alias.name}"
                for alias in node.names
                if (PACKAGE.parent / target.replace(".", "/") / alias.name).with_suffix(".py").exists()
            )
    return {name for name in found if name == "edgeprune" or name.startswith("edgeprune.")}


def package_graph() -> dict[str, dict[str, list[str]]]:
    """unit -> unit it imports -> the files that import it."""
    graph: dict[str, dict[str, list[str]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        source = _unit(module)
        for target in _imported(path, module):
            unit = _unit(target)
            if unit not in (source, "edgeprune"):
                graph.setdefault(source, {}).setdefault(unit, []).append(str(path.relative_to(ROOT)))
    return graph


def _cycle(graph: dict[str, dict[str, list[str]]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_sees_a_known_edge():
    # guards the test below against a graph builder that finds nothing: cli imports the build stage
    assert "edgeprune.build" in package_graph()["edgeprune.cli"]


def test_no_import_cycle_between_packages():
    graph = package_graph()
    cycle = _cycle(graph)
    if cycle:
        steps = [f"{a} -> {b} ({', '.join(graph[a][b])})" for a, b in zip(cycle, cycle[1:])]
        pytest.fail("import cycle between packages:\n  " + "\n  ".join(steps))
