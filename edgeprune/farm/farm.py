"""A farm of identical devices measuring for one command, each through its own Ray actor (worker.py).

What is spread: latency-table cells (one at a time to whichever device is free), the table's end-to-end variants
(a share per device, each timed next to the unpruned model on that device) and a build's comparisons (each model
against the unpruned one on a device of its own). What never is: a comparison's models are always timed on one
device, interleaved; a ratio never divides timings from two devices.

Devices are put on one scale first: every device times the same reference cells, the farm reports the spread and
refuses a device further than the farm file's `max_spread` from the median; a cell timed on a device is stored
divided by that device's scale, with the device's name. A device lost mid-run costs nothing measured (each cell is
appended and fsynced as it arrives, latency/table.py) and its job goes to the others; Ctrl-C (or any error) closes
every agent session before Ray stops.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.errors import DeviceError, EdgepruneError
from edgeprune.farm.cluster import node_resource
from edgeprune.farm.spec import FarmSpec
from edgeprune.farm.worker import DeviceWorker
from edgeprune.latency.compare import Comparison, TimingOptions
from edgeprune.latency.lut import TimedVariants
from edgeprune.latency.table import EntryCache, TableEntry, device_key
from edgeprune.progress import NoProgress, Progress
from edgeprune.types import Artifact, DeviceInfo
from edgeprune.types.farm import DeviceReference, FarmReport

REFERENCE_ROUNDS = 3  # sessions each device times each reference model in; the fastest median counts
START_TIMEOUT_S = 300.0  # a device's agent start (ssh, first copy of the agent, the runtime's import under qemu)
CLOSE_TIMEOUT_S = 30.0
# What must agree between devices for their cells to share a table; the hostname may (and on a farm will) differ.
SAME_KIND = ("arch", "cpu", "runtime", "runtime_version")


class Farm:
    """Started with `with Farm(spec, ray, progress) as farm:`; every device's agent session is closed on leaving."""

    def __init__(self, spec: FarmSpec, ray: Any, progress: Progress | None = None, ray_start_s: float | None = None):
        self.spec, self.name, self._ray, self.ray_start_s = spec, spec.name, ray, ray_start_s
        self.progress = progress or NoProgress()
        self._workers: dict[str, Any] = {}
        self._infos: dict[str, DeviceInfo] = {}
        self._refused: dict[str, str] = {}
        self._lost: dict[str, str] = {}
        self._references: dict[str, tuple[float, ...]] = {}
        self._scales: dict[str, float] = {}
        self._cells = Counter()
        self._reference_names: tuple[str, ...] = ()
        self._job_seconds = 0.0  # wall time of finished jobs, from submission to result in the driver
        self._device_seconds = 0.0  # of which spent in the actors' methods (the device's work and the node's)

    # --- lifetime -------------------------------------------------------------------------------------------

    def __enter__(self) -> Farm:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        actor = self._ray.remote(DeviceWorker)
        for device in self.spec.devices:
            options: dict[str, Any] = {"num_cpus": 0, "max_concurrency": 2, "max_restarts": 0}
            if device.node:
                options["resources"] = node_resource(device.node)
            self._workers[device.name] = actor.options(**options).remote(device.name, self.spec.device_target(device))
        starts = {name: worker.start.remote() for name, worker in self._workers.items()}
        with self.progress.task(f"farm {self.name}: start {len(starts)} device agents", len(starts)) as update:
            for done, (name, ref) in enumerate(starts.items(), 1):
                try:
                    self._infos[name] = self._ray.get(ref, timeout=START_TIMEOUT_S)
                except Exception as exc:
                    self._refused[name] = f"unreachable: {self._loss(exc)}"
                update(done)
        reachable = [d.name for d in self.spec.devices if d.name in self._infos]
        if not reachable:
            raise DeviceError(f"no device of farm {self.name} could be reached: " + self._why(self._refused),
                              fix=f"check each device's connection in {self.spec.source_file}")  # fmt: skip
        first = self._infos[reachable[0]]
        for name in reachable[1:]:
            differ = [f"{k} {getattr(self._infos[name], k)!r} vs {getattr(first, k)!r}" for k in SAME_KIND
                      if getattr(self._infos[name], k) != getattr(first, k)]  # fmt: skip
            if differ:
                self._refused[name] = (f"not the kind of device {reachable[0]} is ({', '.join(differ)}): a farm's "
                                       "devices share one table")  # fmt: skip
        for name in self._refused:
            self.progress.note(f"farm {self.name}: device {name} not used: {self._refused[name]}")

    def close(self) -> None:
        """End every device's agent session (the actors' second thread runs it beside a busy cell), then drop the
        actors. Safe to call twice."""
        workers, self._workers = self._workers, {}
        if not workers:
            return
        closing = [worker.close.remote() for worker in workers.values()]
        try:
            self._ray.wait(closing, num_returns=len(closing), timeout=CLOSE_TIMEOUT_S)
        except Exception:  # closing must never mask the error that led here
            pass
        for worker in workers.values():
            try:
                self._ray.kill(worker)
            except Exception:
                pass

    # --- what the commands use ------------------------------------------------------------------------------

    @property
    def devices(self) -> tuple[str, ...]:
        """The devices measuring now: reachable, of one kind, within the spread, not lost."""
        gone = set(self._refused) | set(self._lost)
        return tuple(d.name for d in self.spec.devices if d.name in self._infos and d.name not in gone)

    @property
    def device_info(self) -> DeviceInfo:
        return self._infos[self.devices[0] if self.devices else next(iter(self._infos))]

    def cache_key(self, threads: int, precision: str, cells: str) -> str:
        """The farm's table cache: its name stands for the hostname (its devices' differ), the rest is the first
        device's (and every used device's: SAME_KIND)."""
        import dataclasses

        return device_key(dataclasses.replace(self.device_info, hostname=f"farm:{self.name}"), threads, precision,
                          cells)  # fmt: skip

    def measure_missing(self, needed: list, cache: EntryCache, runtime: str, precision: str, threads: int,
                        on_progress: Callable[[int, int], None] | None = None,
                        passes: int = 1) -> tuple[dict, int, int]:  # fmt: skip
        """latency.table.measure_missing spread over the devices: each cell the cache lacks (and each repeat pass it
        lacks) goes to the next free device; each result is put on the farm's scale (`reference` first) and appended
        at once."""
        if not self._scales:
            raise ValueError("Farm.reference must time the reference models before cells are spread")
        cached = cache.load()
        missing = Counter({(s.key, i, o): passes - (cached[(s.key, i, o)].passes if (s.key, i, o) in cached else 0)
                           for s, i, o in needed})  # fmt: skip
        first = sum(1 for s, i, o in needed if (s.key, i, o) not in cached)
        jobs = [cell for cell in needed if missing[(cell[0].key, cell[1], cell[2])] > 0]
        total, done = sum(max(0, m) for m in missing.values()), 0
        repeats = 0

        def call(worker, cell):
            return worker.timed.remote("measure_cell", runtime, precision, threads, *cell)

        def on_result(cell, device, raw: TableEntry):
            nonlocal done, repeats
            entry = self._on_farm_scale(raw, device)
            old = cached.get(entry.key)
            if old is not None:
                best = entry if entry.median_ms < old.median_ms else old
                entry = _with(best, passes=old.passes + 1)
                repeats += 1
            cache.append(entry)
            cached[entry.key] = entry
            self._cells[device] += 1
            done += 1
            if on_progress:
                on_progress(done, total)
            if entry.passes < passes:
                return [cell]  # its next pass: at the queue's end, likely on another device, later in time
            return []

        self._run(jobs, call, on_result, "latency table")
        wanted = {(s.key, i, o) for s, i, o in needed}
        return {k: v for k, v in cached.items() if k in wanted}, first, repeats

    def reference(self, artifacts: dict[str, Artifact], runtime: str, threads: int, runs: int) -> None:
        """Every device times the same reference models (REFERENCE_ROUNDS sessions each, the fastest median kept),
        one device after another: devices that share a host or a USB hub must not slow each other down here. A
        device's scale is the geometric mean of its times over the farm's median; one outside max_spread is
        refused, saying by how much."""
        self._reference_names = tuple(artifacts)
        packed = [_pack(a) for a in artifacts.values()]
        names = list(self.devices)
        with self.progress.task(f"farm {self.name}: reference models on {len(names)} devices", len(names)) as update:
            for done, name in enumerate(names, 1):
                try:
                    self._references[name] = tuple(self._ray.get([
                        self._workers[name].bench_reference.remote(p, runtime, threads, runs, REFERENCE_ROUNDS)
                        for p in packed]))  # fmt: skip
                except Exception as exc:
                    self._lose(name, exc)
                update(done)
        used = [n for n in names if n in self._references]
        if not used:
            raise self._all_lost("reference timings")
        times = np.array([self._references[n] for n in used])
        median = np.median(times, axis=0)
        for name, row in zip(used, times):
            self._scales[name] = float(np.exp(np.mean(np.log(row / median))))
        limit = self.spec.max_spread
        for name in used:
            scale = self._scales[name]
            if not 1 / (1 + limit) <= scale <= 1 + limit:
                self._refused[name] = (f"it timed the reference models at {100 * (scale - 1):+.0f} % of the farm's "
                                       f"median (limit ±{100 * limit:.0f} %, max_spread in {self.spec.source_file}): "
                                       "another clock, power mode or thermal state; fix it or raise max_spread")  # fmt: skip
                self.progress.note(f"farm {self.name}: device {name} refused: {self._refused[name]}")
        if not self.devices:
            raise DeviceError(f"every device of farm {self.name} was refused: " + self._why(self._refused))
        kept = [self._scales[n] for n in self.devices]
        self.progress.note(f"farm {self.name}: {len(kept)} devices, reference spread {100 * self.spread(kept):.1f} %")

    def time_variants(self, artifacts: list[Artifact], runtime: str, threads: int, runs: int, warmup: int,
                      on_progress: Callable[[int], None] | None = None) -> TimedVariants:  # fmt: skip
        """The table's end-to-end variants, a share per device, each share timed with the unpruned model
        (artifacts[0]) on its device; the unpruned model's median on the farm's scale is the median over shares."""
        from edgeprune.latency.lut import ROUNDS

        packed = [_pack(a) for a in artifacts]
        devices = self.devices
        shares = [list(range(1 + d, len(artifacts), len(devices))) for d in range(len(devices))]
        shares = [share for share in shares if share] or [[]]
        results: list = [None] * len(artifacts)
        before: list = [None] * len(artifacts)
        where: list[str | None] = [None] * len(artifacts)
        unpruned, rounds, finished = [], [], 0

        def call(worker, share):
            return worker.timed.remote("time_variants", [packed[0], *(packed[k] for k in share)], runtime, threads,
                                       runs, warmup)  # fmt: skip

        def on_result(share, device, timed: TimedVariants):
            nonlocal finished
            if results[0] is None:
                results[0], before[0], where[0] = timed.results[0], timed.before[0], device
            for j, k in enumerate(share, 1):
                results[k], before[k], where[k] = timed.results[j], timed.before[j], device
            unpruned.append(timed.unpruned_ms / self._scales.get(device, 1.0))
            rounds.append(timed.rounds)
            finished = sum(r is not None for r in results)
            if on_progress:
                on_progress(finished * ROUNDS)
            return []

        self._run(shares, call, on_result, "end-to-end variants")
        return TimedVariants(results, before, max(rounds), float(np.median(unpruned)), where)

    def compare(self, artifacts: dict[str, Artifact], options: TimingOptions, progress: Progress,
                min_rounds: int) -> Comparison:  # fmt: skip
        """Each model after the first compared with the first (interleaved, on one device), the pairs in parallel.
        The first model's figures are those of the pair on the first device to finish."""
        names = list(artifacts)
        reference, others = names[0], names[1:] or names[:1]
        packed = {name: _pack(artifact) for name, artifact in artifacts.items()}
        timing = {"runs": options.runs, "warmup": options.warmup, "threads": options.threads}
        latency, speedup, error, rounds = {}, {}, {}, []

        def call(worker, name):
            return worker.timed.remote(
                "compare", {reference: packed[reference], name: packed[name]}, timing, min_rounds
            )

        def on_result(name, device, compared: Comparison):
            latency.setdefault(reference, compared.latency[reference])
            speedup.setdefault(reference, compared.speedup[reference])
            error.setdefault(reference, compared.speedup_se[reference])
            latency[name], speedup[name], error[name] = compared.latency[name], compared.speedup[name], \
                compared.speedup_se[name]  # fmt: skip
            rounds.append(compared.rounds)
            update(len(rounds))
            return []

        with progress.task(f"latency on farm {self.name}: {len(others)} models against {reference}, one device "
                           "each", len(others)) as update:  # fmt: skip
            self._run(others, call, on_result, "comparisons")
        return Comparison({n: latency[n] for n in names}, {n: speedup[n] for n in names},
                          {n: error[n] for n in names}, max(rounds))  # fmt: skip

    def export(self, model, fmt: str, out_dir: Path, precision: str, calibration, float_layers) -> Artifact:
        """A model exported by a backend that builds on the device (TensorRT: an engine runs only on the kind of
        device that built it) on the farm's first free device, on the next if that one is lost; its files written
        under out_dir whole (fileio.write_bytes)."""
        import dataclasses

        from edgeprune.fileio import write_bytes

        built: list = []

        def call(worker, _):
            return worker.timed.remote("export", model, fmt, precision, calibration, tuple(float_layers))

        def on_result(_, device, value):
            built.append((device, *value))
            return []

        self._run([None], call, on_result, f"{fmt} export")
        device, artifact, files = built[0]
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            write_bytes(out_dir / name, data)
        self.progress.note(f"farm {self.name}: {fmt} built on device {device}")
        return dataclasses.replace(artifact, files=tuple(str(out_dir / Path(f).name) for f in artifact.files))

    def report(self) -> FarmReport:
        devices = tuple(
            DeviceReference(d.name, self._infos[d.name].hostname if d.name in self._infos else "",
                            self._references.get(d.name, ()), self._scales.get(d.name, math.nan),
                            self._refused.get(d.name))
            for d in self.spec.devices
        )  # fmt: skip
        scales = [self._scales[n] for n in self.devices if n in self._scales]
        ray_share = 1 - self._device_seconds / self._job_seconds if self._job_seconds else None
        return FarmReport(
            self.name, self._reference_names, devices, self.spread(scales), self.spec.max_spread,
            method=(f"each device timed the same reference models ({REFERENCE_ROUNDS} sessions each, the fastest "
                    "session's median, all devices at once); a device's scale is the geometric mean of its times "
                    "over the farm's median, and every cell it timed is stored divided by it"),
            cells_by_device=dict(self._cells), lost=dict(self._lost), ray_start_seconds=self.ray_start_s,
            job_seconds=round(self._job_seconds, 3), device_seconds=round(self._device_seconds, 3),
            ray_share=ray_share,
        )  # fmt: skip

    @staticmethod
    def spread(scales: Iterable[float]) -> float:
        scales = list(scales)
        return max(scales) / min(scales) - 1 if scales else 0.0

    # --- scheduling and faults ------------------------------------------------------------------------------

    def _run(self, jobs: Iterable, call, on_result, what: str) -> None:
        """Each job on the next free device (`call(worker, job)` returns the ObjectRef of a DeviceWorker.timed call);
        `on_result(job, device, value)` as each finishes, returning jobs to queue next. A job whose device is lost
        goes back to the queue for another; with every device lost, a DeviceError naming why each left."""
        pending = deque(jobs)
        free = list(self.devices)
        running: dict[Any, tuple[str, Any, float]] = {}
        while pending or running:
            while pending and free:
                device, job = free.pop(0), pending.popleft()
                running[call(self._workers[device], job)] = (device, job, time.perf_counter())
            if not running:
                raise self._all_lost(what)
            ready, _ = self._ray.wait(list(running), num_returns=1)
            for ref in ready:
                device, job, submitted = running.pop(ref)
                try:
                    device_seconds, value = self._ray.get(ref)
                except Exception as exc:
                    self._lose(device, exc)
                    pending.appendleft(job)
                    continue
                self._job_seconds += time.perf_counter() - submitted
                self._device_seconds += device_seconds
                free.append(device)
                pending.extend(on_result(job, device, value) or ())

    def _lose(self, device: str, exc: BaseException) -> None:
        self._lost[device] = self._loss(exc)
        self.progress.note(f"farm {self.name}: device {device} lost ({self._lost[device]}); "
                           f"{len(self.devices)} left")  # fmt: skip

    def _loss(self, exc: BaseException) -> str:
        """Why a device's call failed, when it means the device is gone; anything else (a user's error, a bug) is
        raised as itself."""
        from ray.exceptions import RayActorError, RayTaskError

        cause = exc.cause if isinstance(exc, RayTaskError) else exc
        if isinstance(cause, DeviceError):
            return cause.what
        if isinstance(exc, RayActorError):
            return f"its Ray actor died ({type(exc).__name__})"
        if isinstance(cause, EdgepruneError) or isinstance(exc, RayTaskError):
            raise cause from None
        raise exc

    def _all_lost(self, what: str) -> DeviceError:
        return DeviceError(f"every device of farm {self.name} was lost during the {what}: "
                           + self._why({**self._refused, **self._lost}),
                           fix="reconnect the devices and rerun: every cell measured so far is kept")  # fmt: skip

    @staticmethod
    def _why(reasons: dict[str, str]) -> str:
        return "; ".join(f"{name}: {why}" for name, why in reasons.items())

    def _on_farm_scale(self, raw: TableEntry, device: str) -> TableEntry:
        scale = self._scales.get(device, 1.0)
        alone = raw.alone_ms / scale if raw.alone_ms is not None else None
        return _with(raw, median_ms=raw.median_ms / scale, p90_ms=raw.p90_ms / scale, alone_ms=alone, device=device,
                     device_scale=round(scale, 6))  # fmt: skip


def _with(entry: TableEntry, **changes) -> TableEntry:
    import dataclasses

    return dataclasses.replace(entry, **changes)


def _pack(artifact: Artifact) -> dict[str, bytes]:
    """An artifact's files as {name: bytes}, the loaded file first: what travels to a device's actor."""
    return {Path(f).name: Path(f).read_bytes() for f in artifact.files}
