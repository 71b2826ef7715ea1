"""Importing ultralytics the way edgeprune needs it: offline, quiet, with its settings file in a private folder."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from edgeprune.errors import ConfigError


def import_ultralytics():
    os.environ.setdefault("YOLO_OFFLINE", "1")  # no update or telemetry probes
    os.environ.setdefault("YOLO_VERBOSE", "False")  # its logger writes to stdout, which belongs to --json
    if not os.environ.get("YOLO_CONFIG_DIR"):  # it writes settings.json on first import
        os.environ["YOLO_CONFIG_DIR"] = str(private_config_dir())
    import ultralytics

    return ultralytics


def private_config_dir() -> Path:
    """${XDG_CACHE_HOME:-~/.cache}/edgeprune/ultralytics, mode 0700 and owned by this user. A folder in a shared
    place could be made by someone else first and feed ultralytics their settings; one of ours that others can
    write to is made again, one that is not ours (or a link) is refused."""
    path = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgeprune" / "ultralytics"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        info = os.lstat(path) if os.path.lexists(path) else None
        if info is not None and stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and info.st_mode & 0o077:
            shutil.rmtree(path)  # ours, but others could have written to it: its settings are not trusted
            info = None
        if info is None:
            try:
                path.mkdir(mode=0o700)
            except FileExistsError:
                pass  # made meanwhile by another process (parallel test workers): checked below like any other
            info = os.lstat(path)
    except OSError as exc:
        raise ConfigError(
            f"cannot make ultralytics' settings folder {path}: {exc.strerror}",
            fix="set YOLO_CONFIG_DIR (or XDG_CACHE_HOME) to a folder you can write",
        ) from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ConfigError(
            f"ultralytics' settings folder {path} is not a private folder of this user (a link, "
            "another user's, or open to others)",
            fix=f"remove {path} (edgeprune makes it again, mode 0700), or set YOLO_CONFIG_DIR",
        )
    return path
