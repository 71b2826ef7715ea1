"""Host side of the agent protocol (see targets/agent.py): one session per device, JSON lines over pipes."""

from __future__ import annotations

import dataclasses
import json
import os
import selectors
import shutil
import subprocess
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from edgeprune.devices.transport import Transport, scratch_dir
from edgeprune.errors import DeviceError
from edgeprune.types import DeviceInfo, Record
from edgeprune.types.agent import AGENT_VERSION, BenchResult, EngineBuild, RunOutputs

R = TypeVar("R", bound=Record)
ProgressCallback = Callable[[int, int], None]
_START_TIMEOUT_S = 60.0
_TRACEBACK_LINES = 40  # of the agent's stderr, shown with an internal error


class AgentBug(RuntimeError):
    """The agent failed in a way no input of the user's explains (error_type "internal"): a bug, which the CLI
    shows with its traceback (the agent's own is in the message)."""


class AgentSession:
    """A running agent. Use as a context manager; every request waits at most `timeout_s` between messages."""

    def __init__(self, transport: Transport, *, timeout_s: float = 600.0):
        self.transport = transport
        self.timeout_s = timeout_s
        self._scratch = scratch_dir()
        self._stderr_log = self._scratch / "agent-stderr.log"
        self._proc: subprocess.Popen | None = None
        self._buffer = b""
        self._next_id = 0
        try:  # a failed start (refused, no Python on the device) leaves no scratch folder, here or there
            self._proc = transport.start_agent(self._stderr_log)
            ready = self._read_message(_START_TIMEOUT_S)
            if ready.get("event") != "ready":
                raise DeviceError(f"the agent on {transport.label} did not start: {ready}")
            if ready.get("agent_version") != AGENT_VERSION:
                raise DeviceError(
                    f"the agent on {transport.label} speaks protocol version {ready.get('agent_version')}",
                    expected=f"version {AGENT_VERSION}, that of the agent shipped with this edgeprune",
                    fix="run the agent from this edgeprune's targets/ folder (reinstall edgeprune if it was changed)",
                )
        except BaseException:
            self.close()
            raise
        self.agent_python = ready.get("python")

    def __enter__(self) -> AgentSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            try:
                self._send({"id": -1, "cmd": "quit"})
                self._proc.wait(timeout=10)
            except Exception:  # closing must never mask the error that led here
                self._proc.kill()
        self.transport.close()
        shutil.rmtree(self._scratch, ignore_errors=True)

    def abort(self) -> None:
        """Stop the agent now, even while another thread's request waits on it: kill the local end of its pipes and
        close the transport (ssh: its master connection), so the agent on the device sees its input close and
        exits."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        self.transport.close()
        shutil.rmtree(self._scratch, ignore_errors=True)

    # --- commands ---------------------------------------------------------------------------------------------

    def info(self, target: str, runtime: str) -> DeviceInfo:
        facts = self.request("info", {"runtime": runtime})
        return self._reply(DeviceInfo, "info", {**facts, "target": target} if isinstance(facts, dict) else facts)

    def bench(
        self,
        model: Path,
        runtime: str,
        *,
        threads: int | None,
        warmup: int,
        runs: int,
        batch: int = 1,
        on_progress: ProgressCallback | None = None,
        power: dict[str, Any] | None = None,
        precision: str | None = None,
    ) -> BenchResult:
        """Per-run wall times; with `power` ({sensor, interval_ms, idle_s}) also the sensor's raw samples under
        `.power`, for edgeprune.devices.energy to turn into energy. `precision` is a load-time hint for
        runtimes that choose their compute precision (openvino: fp32 | fp16 | bf16); None: the runtime's default
        as the agent resolves it (openvino: fp32)."""
        args = {
            "model": self.put_model(model),
            "runtime": runtime,
            "threads": threads,
            "warmup": warmup,
            "runs": runs,
            "batch": batch,
        }
        if power:
            args["power"] = power
        if precision is not None:
            args["precision"] = precision
        return self._reply(BenchResult, "bench", self.request("bench", args, on_progress))

    def run(
        self,
        model: Path,
        runtime: str,
        feeds: dict[str, np.ndarray],
        *,
        threads: int | None,
        precision: str | None = None,
    ) -> dict[str, np.ndarray]:
        inputs = {}
        for i, (name, value) in enumerate(feeds.items()):
            local = self._scratch / f"in{i}.npy"
            np.save(local, np.ascontiguousarray(value))
            inputs[name] = self.transport.put(local)
        args = {"model": self.put_model(model), "runtime": runtime, "threads": threads, "inputs": inputs}
        if precision is not None:
            args["precision"] = precision
        result = self._reply(RunOutputs, "run", self.request("run", args))
        return {name: np.load(self.transport.fetch(path, self._scratch)) for name, path in result.outputs.items()}

    def build_engine(
        self,
        onnx: Path,
        *,
        precision: str = "fp32",
        calibration: Path | None = None,
        calibration_batch: int | None = None,
        workspace_mb: int | None = None,
        batch: int = 1,
        out: str | None = None,
        float_layers: list[str] | None = None,
        sparse_weights: bool = False,
        on_progress: ProgressCallback | None = None,
    ) -> EngineBuild:
        """Build a TensorRT engine ON the device from `onnx` (see targets/agent_trt_builder.py). `calibration` (int8
        only) is a host .npy of samples (stacked on the first axis) or a calibration cache from an earlier build;
        `out` a device path (None: beside the ONNX on the device). The engine stays on the device: `.engine` is its
        device path, for bench/run with runtime "tensorrt" or transport.fetch. `float_layers`: ONNX node names
        an fp16/int8 build keeps in fp32. `sparse_weights`: let TensorRT run 2:4-sparse weights on sparse tensor
        cores (BuilderFlag.SPARSE_WEIGHTS; the reply's `sparse_weights` says whether the device's TensorRT could)."""
        args: dict[str, Any] = {"onnx": self.put_model(onnx), "precision": precision, "batch": batch}
        if calibration is not None:
            args["calibration"] = self.transport.put(Path(calibration))
        for key, value in (
            ("calibration_batch", calibration_batch),
            ("workspace_mb", workspace_mb),
            ("out", out),
            ("float_layers", float_layers or None),
            ("sparse_weights", True if sparse_weights else None),
        ):
            if value is not None:
                args[key] = value
        return self._reply(EngineBuild, "build-engine", self.request("build-engine", args, on_progress))

    def put_model(self, model: Path) -> str:
        """Put a model file and the files it needs beside it (an OpenVINO IR's .bin, an ONNX's external data)."""
        model = Path(model)
        for companion in (
            (model.with_suffix(".bin"),) if model.suffix == ".xml" else (model.with_name(model.name + ".data"),)
        ):
            if companion.is_file():
                self.transport.put(companion)
        return self.transport.put(model)

    # --- protocol ---------------------------------------------------------------------------------------------

    def request(self, cmd: str, args: dict[str, Any], on_progress: ProgressCallback | None = None) -> Any:
        self._next_id += 1
        request_id = self._next_id
        self._send({"id": request_id, "cmd": cmd, "args": args})
        while True:
            message = self._read_message(self.timeout_s)
            if message.get("event") == "progress":
                if on_progress:
                    on_progress(message["done"], message["total"])
                continue
            if message.get("id") != request_id:
                continue
            if not message.get("ok"):
                if message.get("error_type") == "internal":
                    raise AgentBug(
                        f"the agent on {self.transport.label} failed {cmd} with an internal error: "
                        f"{message.get('error')}\n{self._stderr_tail(_TRACEBACK_LINES)}"
                    )
                raise DeviceError(f"agent on {self.transport.label} failed {cmd}: {message.get('error')}")
            return message["result"]

    def _reply(self, record: type[R], cmd: str, result: Any) -> R:
        """The reply as `record`, or AgentBug in one line when it does not have the record's shape: an agent that
        speaks AGENT_VERSION always sends it, so a mismatch is a bug (found here, not as a KeyError later)."""
        problem = reply_problem(record, result)
        if problem:
            raise AgentBug(
                f"the agent on {self.transport.label} answered {cmd} with a malformed reply ({problem}; protocol "
                f"version {AGENT_VERSION})"
            )
        return record._from_fields(result)

    def _send(self, message: dict[str, Any]) -> None:
        try:
            self._proc.stdin.write((json.dumps(message) + "\n").encode())
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._died() from None

    def _read_message(self, timeout_s: float) -> dict[str, Any]:
        fd = self._proc.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                if not selector.select(timeout_s):
                    self._proc.kill()
                    raise DeviceError(
                        f"the agent on {self.transport.label} sent nothing for {timeout_s:.0f} s and was stopped",
                        fix="check the device is responsive; results measured so far are kept",
                    )
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise self._died()
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            raise DeviceError(f"the agent on {self.transport.label} sent a malformed line: {line[:120]!r}") from None

    def _died(self) -> DeviceError:
        code = self._proc.wait(timeout=10)
        return self.transport.agent_died(code, self._stderr_tail(1)[:200])

    def _stderr_tail(self, lines: int) -> str:
        """The last `lines` lines the agent wrote to its stderr."""
        if not self._stderr_log.exists():
            return ""
        return "\n".join(self._stderr_log.read_text(errors="replace").strip().splitlines()[-lines:])


def reply_problem(record: type[Record], reply: Any) -> str | None:
    """What keeps `reply` from being a `record` (a missing field, a value of the wrong type), or None. Fields the
    record does not know are ignored: an agent may report more than this host reads."""
    if not isinstance(reply, dict):
        return f"{type(reply).__name__}, not an object"
    hints = typing.get_type_hints(record)
    for f in dataclasses.fields(record):
        if f.name not in reply:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                return f"no {f.name!r}"
        elif not _conforms(reply[f.name], hints[f.name]):
            return f"{f.name!r} is {reply[f.name]!r:.60}"
    return None


def _conforms(value: Any, hint: Any) -> bool:
    """Whether a JSON value can stand for `hint` (the JSON kinds only: str, int, float, bool, list, dict, None)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin in (tuple, list) or hint in (tuple, list):
        return isinstance(value, list) and (not args or all(_conforms(v, args[0]) for v in value))
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True
