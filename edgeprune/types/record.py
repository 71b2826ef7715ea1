"""Artifacts that flow between stages: frozen dataclasses with a JSON round-trip and a fingerprint.

Every top-level JSON document carries `schema_version` and `kind`; `load_json` refuses a document written by an
incompatible schema instead of guessing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import types as _pytypes
import typing
from pathlib import Path
from typing import Any, TypeVar

from edgeprune.errors import ConfigError

SCHEMA_VERSION = 1
T = TypeVar("T", bound="Record")


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    numpy = sys.modules.get("numpy")  # not imported here: the command line reads records without numpy
    if numpy is not None and isinstance(value, numpy.generic):
        return value.item()
    return value


def _decode(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if value is None:
        return None
    if origin in (typing.Union, _pytypes.UnionType):
        members = [a for a in args if a is not type(None)]
        record_members = [a for a in members if isinstance(a, type) and issubclass(a, Record)]
        if record_members and isinstance(value, dict):
            return record_members[0]._from_fields(value)
        return _decode(members[0], value) if len(members) == 1 else value
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v) for v in value)
        return tuple(_decode(a, v) for a, v in zip(args, value))
    if origin is dict:
        return {k: _decode(args[1], v) for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, Record):
        return tp._from_fields(value)
    if tp is float and isinstance(value, int):
        return float(value)
    return value


class Record:
    """Mixin for the frozen dataclasses below: dict/JSON round-trip and a content fingerprint."""

    # Fields left out of the fingerprint (timestamps, paths): two runs that produced the same content agree.
    _volatile: typing.ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "kind": type(self).__name__, **_encode(self)}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        version = data.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise ConfigError(
                f"{cls.__name__} was written with schema_version {version}",
                expected=f"schema_version {SCHEMA_VERSION}",
                fix="re-run the command that produced it with this edgeprune version",
            )
        kind = data.get("kind", cls.__name__)
        if kind != cls.__name__:
            raise ConfigError(f"JSON holds a {kind}", expected=f"a {cls.__name__}")
        return cls._from_fields(data)

    @classmethod
    def _from_fields(cls: type[T], data: dict[str, Any]) -> T:
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        kwargs = {k: _decode(hints[k], v) for k, v in data.items() if k in known}
        return cls(**kwargs)

    @classmethod
    def from_json(cls: type[T], text: str) -> T:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> Path:
        from edgeprune.fileio import write_text

        return write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls: type[T], path: str | Path) -> T:
        try:
            return cls.from_json(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{cls.__name__} file not found: {path}") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None

    @property
    def fingerprint(self) -> str:
        content = {k: v for k, v in _encode(self).items() if k not in self._volatile}
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]
