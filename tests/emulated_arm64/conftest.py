"""The emulated Raspberry Pi (board.py) as a session fixture, reached as the shipped raspberry-pi-5 profile is: its
--host/--port/--user through EDGEPRUNE_* variables, the key and a strict known_hosts through EDGEPRUNE_SSH_KEY and
EDGEPRUNE_SSH_CONFIG. Skips only where the host cannot run it at all (not root, tools missing); a board that fails
to build or start fails the tests."""

from __future__ import annotations

import pytest

from tests.emulated_arm64 import board as boards


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "emulated_arm64: runs on the emulated arm64 board (qemu-user; tests/emulated_arm64/board.py)"
    )


def pytest_collection_modifyitems(config, items):
    """The board's tests first: under xdist (`--dist loadfile`) their file then starts on one worker at once,
    waiting there for a board still building in the background (.ci/run) while the other worker runs the rest."""
    items.sort(key=lambda item: item.get_closest_marker("emulated_arm64") is None)


@pytest.fixture(scope="session")
def board(tmp_path_factory):
    try:
        boards.check_host()
    except boards.BoardUnavailable as exc:
        pytest.skip(f"no emulated arm64 board here: {exc}")
    try:
        rootfs = boards.build()
        running = boards.start(rootfs, tmp_path_factory.mktemp("board"))
    except boards.BoardUnavailable as exc:
        pytest.fail(f"the emulated arm64 board did not come up: {exc}")
    yield running
    boards.stop(running)


@pytest.fixture(scope="session")
def board_env(board, tmp_path_factory) -> dict[str, str]:
    """The variables that point the raspberry-pi-5 profile at the board (run_cli's `env`), and one latency cache for
    the session: the table `profile --lut` measures there is the one `build` then plans on (its cells are minutes
    under emulation)."""
    return {
        "EDGEPRUNE_CACHE": str(tmp_path_factory.mktemp("board-cache")),
        "EDGEPRUNE_HOST": "127.0.0.1",
        "EDGEPRUNE_PORT": str(board.port),
        "EDGEPRUNE_USER": "root",
        "EDGEPRUNE_SSH_KEY": str(board.client_key),
        "EDGEPRUNE_SSH_CONFIG": str(board.ssh_config),
    }
