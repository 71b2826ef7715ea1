"""Helpers for the Darknet tests: tiny cfgs written on the fly, and the real cfgs under ../shared/assets."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.conftest import ASSETS

CFGS = (
    "pjreddie/yolov3.cfg",
    "pjreddie/yolov3-tiny.cfg",
    "pjreddie/yolov3-spp.cfg",
    "pjreddie/darknet53.cfg",
    "pjreddie/darknet53_448.cfg",
    "alexeyab/yolov3.cfg",
    "alexeyab/yolov4.cfg",
    "alexeyab/yolov4-tiny.cfg",
    "yolo-fastest/yolo-fastest-1.1.cfg",
    "yolo-fastest/yolo-fastest-1.1-xl.cfg",
)
SMALL_CFGS = ("pjreddie/yolov3-tiny.cfg", "alexeyab/yolov4-tiny.cfg", "yolo-fastest/yolo-fastest-1.1.cfg")
DARKNET = ASSETS / "darknet"

NET = """
[net]
width={w}
height={h}
channels={c}
"""


@pytest.fixture
def make_cfg(tmp_path):
    """Writes a cfg: a [net] of the given size, then `body` (dedented)."""

    def make(body: str, *, w: int = 8, h: int = 8, c: int = 3, name: str = "tiny.cfg") -> Path:
        path = tmp_path / name
        path.write_text(NET.format(w=w, h=h, c=c).lstrip() + textwrap.dedent(body))
        return path

    return make
