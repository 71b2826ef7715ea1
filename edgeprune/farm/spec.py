"""The farm file: one target profile and the devices of that kind that measure for it.

    name: pi-farm            # optional (default: the file's name); names the farm's latency-table cache
    target: raspberry-pi-4   # a profile name or YAML path: runtime, precision, threads, power of every device
    max_spread: 0.15         # optional: refuse a device whose reference timings are further than this from the
                             # farm's median (0.15: 15 % slower or faster)
    devices:
      - name: pi-a
        connection: {kind: ssh, host: 10.0.0.11, user: pi}
        node: 10.0.0.2       # optional: the Ray node (its address) the device is reached from; default: any node
      - name: phone-1
        connection: {kind: adb, serial: R58M30ABCDE}
        node: 10.0.0.3

Every device must be the target's kind of device: the farm times each cell once, on whichever device is free.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edgeprune.devices.profiles import load_profile, parse_connection
from edgeprune.devices.transport import with_connection
from edgeprune.errors import ConfigError
from edgeprune.types import Connection, Record, TargetProfile

DEFAULT_MAX_SPREAD = 0.15  # the loopback devices of one 2-core VM differ by up to ~5 % (benchmarks/RESULTS.md)
_TOP_KEYS = ("name", "target", "max_spread", "devices")
_DEVICE_KEYS = ("name", "connection", "node")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


@dataclass(frozen=True)
class FarmDevice(Record):
    name: str
    connection: Connection
    node: str | None = None  # the Ray node's address that reaches the device; None: any node


@dataclass(frozen=True)
class FarmSpec(Record):
    name: str
    target: TargetProfile
    devices: tuple[FarmDevice, ...]
    max_spread: float = DEFAULT_MAX_SPREAD
    source_file: str | None = None

    _volatile = ("source_file",)

    def device_target(self, device: FarmDevice) -> TargetProfile:
        """The farm's target profile reached through this device's connection."""
        return with_connection(dataclasses.replace(self.target, connection=device.connection))

    def first_target(self) -> TargetProfile:
        """The target through the farm's first device: where what the farm does not spread is measured."""
        return self.device_target(self.devices[0])


def load_farm(path: str | Path) -> FarmSpec:
    """The farm file at `path`, checked: one line naming what is wrong and where."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"farm file not found: {path}", fix="pass the path of a farm YAML (README: Device farm)")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"farm file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"farm file {path} is not a mapping", expected="keys " + ", ".join(_TOP_KEYS))
    unknown = sorted(set(data) - set(_TOP_KEYS))
    if unknown:
        raise ConfigError(f"farm file {path} has unknown keys {unknown}", expected=", ".join(_TOP_KEYS))
    if not data.get("target") or not isinstance(data["target"], str):
        raise ConfigError(f"farm file {path} names no target", expected="target: a profile name or YAML path")
    target_ref = data["target"]
    if target_ref.endswith((".yaml", ".yml")) and not Path(target_ref).is_absolute():
        target_ref = str(path.parent / target_ref)  # relative to the farm file, as a user writes it beside it
    target = load_profile(target_ref)
    name = data.get("name", path.stem)
    _check_name(name, f"farm file {path}: name")
    spread = data.get("max_spread", DEFAULT_MAX_SPREAD)
    if isinstance(spread, bool) or not isinstance(spread, (int, float)) or not 0 < spread < 10:
        raise ConfigError(f"farm file {path}: max_spread {spread!r}", expected="a number above 0, e.g. 0.15 for 15 %")
    devices = data.get("devices")
    if not isinstance(devices, list) or not devices:
        raise ConfigError(f"farm file {path} lists no devices", expected="devices: a list of {name, connection}")
    parsed = tuple(_device(entry, k, path) for k, entry in enumerate(devices))
    names = [d.name for d in parsed]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"farm file {path} names device {repeated[0]!r} twice", expected="one name per device")
    places = [_place(d.connection) for d in parsed]
    for k, place in enumerate(places):
        if place is not None and places.index(place) != k:
            raise ConfigError(f"farm file {path}: devices {parsed[places.index(place)].name!r} and {parsed[k].name!r} "
                              "are the same device", fix="list each device once")  # fmt: skip
    farm = FarmSpec(name, target, parsed, float(spread), str(path))
    for device in parsed:
        farm.device_target(device)  # each connection checked as a target's is (host, port, serial)
    return farm


def _device(entry: Any, k: int, path: Path) -> FarmDevice:
    where = f"farm file {path}, device {k + 1}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} is not a mapping", expected="name, connection and optionally node")
    unknown = sorted(set(entry) - set(_DEVICE_KEYS))
    if unknown:
        raise ConfigError(f"{where} has unknown keys {unknown}", expected=", ".join(_DEVICE_KEYS))
    _check_name(entry.get("name"), f"{where}: name")
    connection = parse_connection(entry, path)
    if connection.kind == "local":
        raise ConfigError(f"{where} ({entry['name']}) has no ssh or adb connection",
                          expected="connection: {kind: ssh, host: …} or {kind: adb, serial: …}")  # fmt: skip
    node = entry.get("node")
    if node is not None and (not isinstance(node, str) or not node.strip()):
        raise ConfigError(f"{where}: node {node!r}", expected="the address of a Ray node, e.g. 10.0.0.2")
    return FarmDevice(entry["name"], connection, node)


def _check_name(name: Any, where: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{where} {name!r}", expected="letters, digits, '.', '_' or '-', at most 63")


def _place(connection: Connection) -> tuple | None:
    """Where a device is, when the file says it exactly (an ssh alias may hide a duplicate: not guessed)."""
    if connection.kind == "ssh":
        return ("ssh", connection.host, connection.port or 22)
    return ("adb", connection.serial) if connection.serial else None
