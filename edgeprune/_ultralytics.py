"""Importing ultralytics the way edgeprune needs it: offline, quiet, with its settings file in a temp dir."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def import_ultralytics():
    os.environ.setdefault("YOLO_OFFLINE", "1")  # no update or telemetry probes
    os.environ.setdefault("YOLO_VERBOSE", "False")  # its logger writes to stdout, which belongs to --json
    if "YOLO_CONFIG_DIR" not in os.environ:  # it writes settings.json on first import
        os.environ["YOLO_CONFIG_DIR"] = str(Path(tempfile.gettempdir()) / "edgeprune-ultralytics")
    import ultralytics

    return ultralytics
