"""One farm device's Ray actor: it holds that device's agent session, on the Ray node the device is reached from.

A plain class, made an actor by edgeprune.farm.farm (`ray.remote(DeviceWorker)`), so this module imports no Ray.
Each method runs on the actor's node: cells are built there (torch and the runtime's exporter, as on a
one-device build), end-to-end models arrive as file bytes through Ray's object store.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from pathlib import Path

from edgeprune.devices.agent_client import AgentSession
from edgeprune.devices.transport import scratch_dir, transport_for
from edgeprune.latency.cells import CellTimer
from edgeprune.latency.microbench import LayerSignature
from edgeprune.latency.table import TableEntry
from edgeprune.types import DeviceInfo, TargetProfile


class DeviceWorker:
    """The agent session of one device of a farm (its `target` is the farm's profile with this device's
    connection)."""

    def __init__(self, name: str, target: TargetProfile):
        self.name, self.target = name, target
        self._scratch = scratch_dir()
        self._timers: dict[tuple, CellTimer] = {}
        self._closed = threading.Event()
        self._agent: AgentSession | None = None

    def start(self) -> DeviceInfo:
        """Open the device's agent session (not in __init__: Ray reports an error raised here as itself, one
        raised while constructing an actor only as a traceback's text)."""
        self._agent = AgentSession(transport_for(self.target))
        return self._agent.info(self.target.name, self.target.runtime)

    def timed(self, method: str, *args):
        """(seconds spent in `method` on this node, its result): what the farm subtracts from a job's wall time to
        tell Ray's share from the device's."""
        started = time.perf_counter()
        value = getattr(self, method)(*args)
        return time.perf_counter() - started, value

    def bench_reference(self, files: dict[str, bytes], runtime: str, threads: int, runs: int, rounds: int) -> float:
        """The reference model's median over `rounds` sessions of `runs` runs: the fastest round's median (a slow
        spell of a shared machine must not make a device look slower than it is)."""
        from edgeprune.latency.compare import round_median

        path = self._unpack(files, "reference")
        medians = [round_median(self._agent.bench(path, runtime, threads=threads, warmup=5, runs=runs))
                   for _ in range(rounds)]  # fmt: skip
        return min(medians)

    def measure_cell(self, runtime: str, precision: str, threads: int, signature: LayerSignature, cin: int,
                     cout: int) -> TableEntry:  # fmt: skip
        key = (runtime, precision, threads)
        if key not in self._timers:
            folder = self._scratch / f"cells-{runtime}-{precision}-{threads}"
            folder.mkdir(exist_ok=True)
            target = dataclasses.replace(self.target, runtime=runtime, precision=precision)
            self._timers[key] = CellTimer(self._agent, target, threads, folder)
        return self._timers[key].measure(signature, cin, cout)

    def time_variants(self, models: list[dict[str, bytes]], runtime: str, threads: int, runs: int, warmup: int):
        """The lut's interleaved rounds (edgeprune.latency.lut.time_variants) on this device; models[0] is the
        unpruned one. Each model is {file name: bytes}, its first file the one a runtime loads."""
        from edgeprune.latency.lut import time_variants

        paths = [self._unpack(files, f"variant{k}") for k, files in enumerate(models)]
        return time_variants(self._agent, paths, runtime, threads, runs, warmup)

    def compare(self, models: dict[str, dict[str, bytes]], options: dict, min_rounds: int):
        """edgeprune.latency.compare.compare_in_session on this device: its models timed interleaved."""
        from types import SimpleNamespace

        from edgeprune.latency.compare import compare_in_session

        paths = {name: self._unpack(files, f"compare-{name}") for name, files in models.items()}
        return compare_in_session(self._agent, paths, self.target, SimpleNamespace(**options), min_rounds)

    def export(self, model, fmt: str, precision: str, calibration, float_layers: tuple[str, ...]):
        """The model exported by a backend that builds on the device (TensorRT), on this device; returns the
        Artifact and its files' bytes, for the host to write where the user asked."""
        from edgeprune.backends._registry import backend_for_format

        folder = self._scratch / "export"
        shutil.rmtree(folder, ignore_errors=True)
        backend = backend_for_format(fmt).for_target(self.target)
        artifact = backend.export(model, folder, precision, calibration=calibration, float_layers=float_layers)
        side_files = [p for p in sorted(folder.glob("*")) if p.is_file() and str(p) not in artifact.files]
        return artifact, {Path(f).name: Path(f).read_bytes() for f in (*artifact.files, *map(str, side_files))}

    def close(self) -> None:
        """End the agent session (the agent on the device exits) and remove this actor's scratch files. Runs
        beside a busy method (the actor has a second thread): a Ctrl-C of the farm must not wait for a cell."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._agent is not None:
            self._agent.abort()
        shutil.rmtree(self._scratch, ignore_errors=True)

    def _unpack(self, files: dict[str, bytes], folder_name: str) -> Path:
        folder = self._scratch / folder_name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        for file_name, data in files.items():
            (folder / Path(file_name).name).write_bytes(data)
        return folder / Path(next(iter(files))).name
