"""Where ultralytics' settings go: a private folder of this user (never a predictable shared one), and nowhere at
all when the model is not an ultralytics one."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from edgeprune._ultralytics import private_config_dir
from edgeprune.errors import ConfigError
from tests.conftest import run_cli


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "edgeprune" / "ultralytics"


def test_the_folder_is_made_private_under_the_users_cache(cache):
    assert private_config_dir() == cache
    assert cache.is_dir() and cache.stat().st_mode & 0o777 == 0o700
    assert private_config_dir() == cache  # and found again as it is


def test_a_folder_others_can_write_to_is_made_again(cache):
    cache.mkdir(parents=True)
    cache.chmod(0o777)
    (cache / "settings.json").write_text('{"planted": true}')
    assert private_config_dir() == cache
    assert cache.stat().st_mode & 0o777 == 0o700 and not (cache / "settings.json").exists()


def test_a_link_is_refused(cache, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    cache.parent.mkdir(parents=True)
    cache.symlink_to(elsewhere)
    with pytest.raises(ConfigError, match="is not a private folder of this user"):
        private_config_dir()


@pytest.mark.skipif(os.geteuid() != 0, reason="making a folder another user owns needs root")
def test_another_users_folder_is_refused(cache):
    cache.mkdir(parents=True, mode=0o700)
    os.chown(cache, 65534, 65534)
    with pytest.raises(ConfigError, match="is not a private folder of this user.*fix: remove"):
        private_config_dir()


def test_a_classifier_never_imports_ultralytics_so_writes_no_settings(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "HOME": str(home),
        "TMPDIR": str(tmp_path),
        "XDG_CACHE_HOME": "",
        "XDG_CONFIG_HOME": "",
        "YOLO_CONFIG_DIR": "",
        "EDGEPRUNE_CACHE": str(tmp_path / "lut"),
    }
    environ = {k: v for k, v in {**os.environ, **env}.items() if v}
    result = run_cli("prune", "--model", "cifar:resnet20", "--ratio", "0.3", "--out", tmp_path / "pruned", env=env)
    assert result.code == 0, result.stderr
    # the planner's structure (build's plan stage) looks for ultralytics blocks without importing ultralytics
    check = (
        "import sys; from edgeprune.models import LoadOptions, load_model; "
        "from edgeprune.plan.structure import read_structure; "
        "read_structure(load_model('cifar:resnet20', LoadOptions()), 'l1', 8); "
        "sys.exit('ultralytics' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", check], env=environ, timeout=600).returncode == 0
    written = [p for p in tmp_path.rglob("*") if "ultralytics" in p.name.lower() or p.name == "settings.json"]
    assert not written
