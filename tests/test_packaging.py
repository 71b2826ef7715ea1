"""An installed (non-editable) edgeprune must carry profiles/ and targets/ and find them."""

import subprocess
import sys
import zipfile

from tests.conftest import REPO


def test_wheel_ships_profiles_and_agent_and_finds_them(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(REPO),
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            "-q",
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("edgeprune-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "edgeprune/_data/profiles/host.yaml" in names
    assert "edgeprune/_data/targets/agent.py" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "from edgeprune._resources import resource_dir; from edgeprune.devices.profiles "
            "import load_profile; print(resource_dir('targets')); print(load_profile('host').source_file)",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(site), "PATH": ""},
        cwd=tmp_path,
    )
    targets_dir, host_yaml = probe.stdout.split()
    assert targets_dir == str(site / "edgeprune" / "_data" / "targets")
    assert host_yaml == str(site / "edgeprune" / "_data" / "profiles" / "host.yaml")


def test_ci_runs_the_readme_test_command_verbatim():
    command = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert "pytest" in command
    assert command in (REPO / "README.md").read_text()
