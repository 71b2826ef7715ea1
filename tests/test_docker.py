"""The images under docker/, checked for structure (only agent-arm64 is built in the tests: tests/emulated_arm64).

Every docker/*/Dockerfile: `ARG BASE` before the first FROM, which uses it; every COPY source exists and passes
.dockerignore (its rules matched as Docker matches them); every copied shell script parses; an absolute ENTRYPOINT
is a file the Dockerfile copies. Agent images: the agent lands where the ssh transport looks for it, under the
transport's own hash (edgeprune.devices.ssh._agent_sha), computed by running the image's own shell code.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: hatchling's dependency
    import tomli as tomllib

from edgeprune.devices.ssh import _agent_sha

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted(ROOT.glob("docker/*/Dockerfile"))
AGENT_SOURCES = "targets/agent*.py"
INSTALL_AGENT = "docker/install-agent.sh"


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: continuation lines joined, comment lines dropped (as Docker does)."""
    result, pending = [], ""
    for line in dockerfile.read_text().splitlines():
        if line.lstrip().startswith("#") or (not line.strip() and not pending):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        keyword, _, args = (pending + line).strip().partition(" ")
        result.append((keyword.upper(), args.strip()))
        pending = ""
    return result


def _copies(dockerfile: Path) -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY/ADD from the build context (not `--from` another stage)."""
    copies = []
    for keyword, args in _instructions(dockerfile):
        if keyword not in ("COPY", "ADD"):
            continue
        words = json.loads(args) if args.startswith("[") else shlex.split(args)
        if any(w.startswith("--from") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        copies.append((words[:-1], words[-1]))
    return copies


def _ignore_rules() -> list[tuple[bool, re.Pattern]]:
    """.dockerignore as (is an exception `!`, regex) in file order: Docker's filepath.Match plus `**` (any number of
    directories), each pattern cleaned of leading and trailing slashes."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            else:
                regex += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
                i += 1
        rules.append((negate, re.compile(regex)))
    return rules


def _ignored(path: str, rules=None) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parent directories decides."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for negate, regex in rules if rules is not None else _ignore_rules():
        if any(regex.fullmatch(p) for p in prefixes):
            ignored = not negate
    return ignored


def _context_files(source: str) -> list[Path]:
    """What a COPY source names in the repository: the matches of its glob (a directory stands for itself)."""
    return sorted(ROOT.glob(source.rstrip("/"))) if any(c in source for c in "*?[") else [ROOT / source.rstrip("/")]


@pytest.fixture(scope="module")
def rules():
    return _ignore_rules()


def test_dockerignore_lets_through_what_the_images_need_and_nothing_else(rules):
    assert DOCKERFILES, "no docker/*/Dockerfile found"
    for path in ("docker/agent-arm64/Dockerfile", "targets/agent.py", "edgeprune/cli/__init__.py", "profiles/x.yaml"):
        assert not _ignored(path, rules), path
    for path in (
        "tests/test_docker.py",
        "targets/jetson/setup.sh",
        "edgeprune/__pycache__/x.pyc",
        ".git/HEAD",
        ".venv",
    ):
        assert _ignored(path, rules), path


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_base_is_a_build_argument_declared_before_the_first_from(dockerfile):
    instructions = _instructions(dockerfile)
    first_from = next(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    declared = [args.split("=")[0] for keyword, args in instructions[:first_from] if keyword == "ARG"]
    assert "BASE" in declared, f"{dockerfile}: no `ARG BASE` before the first FROM"
    image = instructions[first_from][1].split()[0]
    assert image in ("${BASE}", "$BASE"), f"{dockerfile}: the first FROM is {image}, not ${{BASE}}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_every_copy_source_exists_and_passes_dockerignore(dockerfile, rules):
    for sources, _ in _copies(dockerfile):
        for source in sources:
            found = _context_files(source)
            assert found and all(p.exists() for p in found), f"{dockerfile}: COPY {source}: nothing in the repository"
            for path in found:
                name = path.relative_to(ROOT).as_posix()
                assert not _ignored(name, rules), f"{dockerfile}: COPY {source}: .dockerignore drops {name}"
                if path.is_dir():
                    inside = [p.relative_to(ROOT).as_posix() for p in path.rglob("*") if p.is_file()]
                    assert any(not _ignored(p, rules) for p in inside), f"{dockerfile}: COPY {source} is empty"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_shell_code_parses_and_the_entrypoint_is_a_copied_file(dockerfile):
    copies = _copies(dockerfile)
    for sources, _ in copies:
        for script in (s for s in sources if s.endswith(".sh")):
            text = (ROOT / script).read_text()
            assert text.startswith("#!/bin/sh\n"), f"{script}: no #!/bin/sh line"
            proc = subprocess.run(["sh", "-n", ROOT / script], capture_output=True, text=True)
            assert proc.returncode == 0, f"{script}: {proc.stderr}"
    for keyword, args in _instructions(dockerfile):
        if keyword == "RUN" and not args.startswith("["):
            proc = subprocess.run(["sh", "-n", "-c", args], capture_output=True, text=True)
            assert proc.returncode == 0, f"{dockerfile}: RUN {args}: {proc.stderr}"
    entrypoints = [args for keyword, args in _instructions(dockerfile) if keyword == "ENTRYPOINT"]
    assert entrypoints, f"{dockerfile}: no ENTRYPOINT"
    program = json.loads(entrypoints[-1])[0]
    if program.startswith("/"):
        assert program in [dest for _, dest in copies], f"{dockerfile}: ENTRYPOINT {program} is not a copied file"


def _agent_dockerfiles() -> list[Path]:
    """The on-device agent images: docker/agent-*/ (the toolchain copies the agent too, into its wheel's source)."""
    return [d for d in DOCKERFILES if d.parent.name.startswith("agent-")]


def _inline_hash(run_line: str) -> str:
    """The `$(...)` assigned to `hash=` in a RUN line, parentheses balanced."""
    start = run_line.index("hash=$(") + len("hash=")
    depth = 0
    for end in range(start + 1, len(run_line)):
        depth += {"(": 1, ")": -1}.get(run_line[end], 0)
        if depth == 0:
            return run_line[start : end + 1]
    raise AssertionError(f"unbalanced hash=$( in: {run_line}")


@pytest.mark.parametrize("dockerfile", _agent_dockerfiles(), ids=lambda p: p.parent.name)
def test_agent_is_installed_under_the_ssh_transports_hash(dockerfile, tmp_path):
    """The image's own shell code, run on a copy of targets/agent*.py, names the directory the transport looks for:
    ${XDG_CACHE_HOME:-~/.cache}/edgeprune/agent-<_agent_sha()> (root's, in the image)."""
    agent_dir = next(dest for sources, dest in _copies(dockerfile) if AGENT_SOURCES in sources).rstrip("/")
    copy = tmp_path / "agent"
    copy.mkdir()
    for path in ROOT.glob(AGENT_SOURCES):
        shutil.copy(path, copy)
    runs = [args for keyword, args in _instructions(dockerfile) if keyword == "RUN"]
    expected = f"agent-{_agent_sha()}"
    if any(INSTALL_AGENT in sources for sources, _ in _copies(dockerfile)):
        assert any(f"install-agent.sh {agent_dir}" in run for run in runs), f"{dockerfile}: install-agent.sh not run"
        home = tmp_path / "home"
        env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}
        proc = subprocess.run(["sh", ROOT / INSTALL_AGENT, copy], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr
        link = home / ".cache" / "edgeprune" / expected
        assert proc.stdout.strip() == str(link) and link.resolve() == copy.resolve()
    else:  # the hash computed inline in a RUN line
        run = next(run for run in runs if "hash=$(" in run)
        assert '/root/.cache/edgeprune/agent-$hash"' in run, f"{dockerfile}: the link is not under root's cache"
        snippet = f'hash={_inline_hash(run)} && printf %s "$hash"'
        proc = subprocess.run(["sh", "-c", snippet], cwd=copy, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert f"agent-{proc.stdout}" == expected


def test_toolchain_copies_what_its_wheel_is_built_from():
    """`pip install .` in the image builds the wheel from the copied tree: the readme and the directories that
    pyproject.toml forces into it (profiles/, targets/, whose agent files the installed edgeprune ships) must be there."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    copied = [s.rstrip("/") for sources, _ in _copies(ROOT / "docker/toolchain/Dockerfile") for s in sources]
    forced = project["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    for needed in [project["project"]["readme"], *project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]]:
        assert needed in copied, f"docker/toolchain/Dockerfile does not copy {needed}"
    for directory in forced:
        assert any(s == directory or s.startswith(directory + "/") for s in copied), f"nothing of {directory}/ copied"
    assert AGENT_SOURCES in copied and "profiles" in copied
