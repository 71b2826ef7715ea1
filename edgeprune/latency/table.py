"""Per-layer latency lookup table (LUT): measured on the target, cached per device, interpolated, calibrated.

Entries are per-layer timings at a grid of widths: what one more copy of the layer costs in a model of several
(lut.CELL_COPIES; microbench.py builds the models). A model's latency is predicted as the sum of its layers'
interpolated timings, mapped through a linear calibration (a · sum + c · layers + b) fitted on end-to-end
measurements: the sum misses what the layers do not cover (adds, pooling, concatenation, the runtime's per-run
overhead), and the calibration absorbs it.

The cache is one JSON-lines file per device (hostname, CPU, runtime and version, threads, precision, how a cell is
timed). Each entry
is appended, flushed and fsynced as soon as it is measured, so an interrupted build loses nothing; every line
carries a sha256 of its content, and a damaged line is reported and measured again, never trusted. A line torn by
a crash or a full disk stays on its own: the next entry starts on a fresh line (fileio.append_line).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeprune.errors import ConfigError
from edgeprune.fileio import append_line
from edgeprune.latency.microbench import LayerSignature, LayerUse, width_grid
from edgeprune.types import DeviceInfo, Record

CACHE_ENV = "EDGEPRUNE_CACHE"


@dataclass(frozen=True)
class TableEntry(Record):
    """One signature at one width pair, timed as a single-layer model."""

    signature: LayerSignature
    in_channels: int
    out_channels: int
    median_ms: float
    p90_ms: float
    n: int
    runtime: str
    threads: int
    passes: int = 1  # separate measurements this entry is the fastest of (see measure_missing)
    alone_ms: float | None = None  # the layer alone in a one-layer model (median), when the entry is a marginal
    # A farm's entry: the device that timed it, and that device's scale (its reference timings over the farm's
    # median); the times above are on the farm's scale, the device's own divided by it (edgeprune/farm)
    device: str | None = None
    device_scale: float | None = None

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.signature.key, self.in_channels, self.out_channels)


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "edgeprune")


def device_key(device: DeviceInfo, threads: int, precision: str, cells: str) -> str:
    """What makes timings comparable: the machine, its runtime and version, the thread count and precision, and how
    a cell is timed (`cells`)."""
    identity = [device.hostname, device.cpu, device.arch, device.runtime, device.runtime_version, threads, precision,
                cells]  # fmt: skip
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]


class EntryCache:
    """Append-only JSON-lines store of TableEntry for one device; each line is `{"sha256": ..., "entry": {...}}`."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.corrupted = 0  # damaged lines found by the last load()

    def load(self) -> dict[tuple[str, int, int], TableEntry]:
        entries: dict[tuple[str, int, int], TableEntry] = {}
        self.corrupted = 0
        if not self.path.exists():
            return entries
        for line in self.path.read_text(errors="replace").splitlines():
            entry = self._parse(line)
            if entry is None:
                self.corrupted += bool(line.strip())
            else:
                entries[entry.key] = entry
        return entries

    def append(self, entry: TableEntry) -> None:
        body = entry.to_dict()
        line = json.dumps({"sha256": _digest(body), "entry": body}, sort_keys=True)
        append_line(self.path, line, elsewhere=f"{CACHE_ENV} (or profile --cache)")

    @classmethod
    def _parse(cls, line: str) -> TableEntry | None:
        entry = cls._parse_record(line)
        start = line.rfind(_RECORD_START)
        if entry is None and start > 0:  # a whole line appended to a torn one (a cache written before fileio)
            entry = cls._parse_record(line[start:])
        return entry

    @staticmethod
    def _parse_record(line: str) -> TableEntry | None:
        try:
            record = json.loads(line)
            if record["sha256"] != _digest(record["entry"]):
                return None
            return TableEntry.from_dict(record["entry"])
        except Exception:  # any damage (truncation, edits, schema) means: measure it again
            return None


_RECORD_START = '{"entry": '  # how every line starts (keys sorted)


def _digest(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Calibration(Record):
    """predicted_ms = scale · (sum of layer timings) + Σ over layers of (per_layer_ms + per_layer_by_height_ms[its
    input height]) + offset_ms, least squares over `n` measured models. A per-layer term is what a layer costs in a
    graph beyond its own timing (or, when negative, the share of the one-layer model's call overhead that a graph
    does not pay per layer); it is fitted only when the calibration models differ in their number of layers
    (depth-pruned variants), and by feature-map height when enough models were measured to fit one per height."""

    scale: float = 1.0
    offset_ms: float = 0.0
    n: int = 0
    per_layer_ms: float = 0.0
    per_layer_by_height_ms: dict[str, float] = field(default_factory=dict)  # input height → extra ms per layer

    def layer_overhead_ms(self, use: LayerUse) -> float:
        """What one layer costs in the model beyond scale × its cell."""
        return self.per_layer_ms + self.per_layer_by_height_ms.get(str(use.signature.height), 0.0)


def needed_entries(uses: Iterable[LayerUse], step: int) -> list[tuple[LayerSignature, int, int]]:
    """Every (signature, in, out) the table needs for these layers pruned to multiples of `step`."""
    grids: dict[str, tuple[LayerSignature, set[int], set[int]]] = {}
    for use in uses:
        signature, ins, outs = grids.setdefault(use.signature.key, (use.signature, set(), set()))
        ins.update(width_grid(use.in_channels, step))
        outs.update(width_grid(use.out_channels, step))
    needed = []
    for signature, ins, outs in grids.values():
        if signature.kind == "depthwise":
            needed += [(signature, c, c) for c in sorted(ins | outs)]
        else:
            needed += [(signature, i, o) for i in sorted(ins) for o in sorted(outs)]
    return needed


@dataclass
class LatencyTable:
    """Single-layer timings of one device, and the calibration that maps their sum to a model's latency."""

    entries: dict[tuple[str, int, int], TableEntry]
    calibration: Calibration = field(default_factory=Calibration)

    def __post_init__(self) -> None:
        self._grid: dict[str, dict[tuple[int, int], float]] = defaultdict(dict)
        for (sig, i, o), entry in self.entries.items():
            self._grid[sig][(i, o)] = entry.median_ms

    def layer_ms(self, signature: LayerSignature, in_channels: int, out_channels: int) -> float:
        """The layer's timing, interpolated (bilinearly in the two widths) between measured widths, and scaled in
        proportion to the width beyond the measured range."""
        grid = self._grid.get(signature.key)
        if not grid:
            raise ConfigError(f"the latency table has no entries for a {signature.kind} layer {signature.to_dict()}",
                              fix="build the table for this model (edgeprune profile --lut)")  # fmt: skip
        if signature.kind == "depthwise":
            widths = sorted(i for i, _ in grid)
            return _interpolate(widths, [grid[(c, c)] for c in widths], in_channels)
        ins, outs = sorted({i for i, _ in grid}), sorted({o for _, o in grid})
        per_in = []
        for i in ins:
            if not all((i, o) in grid for o in outs):
                raise ConfigError(f"the latency table's grid for a {signature.kind} layer has holes",
                                  fix="rebuild the table (edgeprune profile --lut)")  # fmt: skip
            per_in.append(_interpolate(outs, [grid[(i, o)] for o in outs], out_channels))
        return _interpolate(ins, per_in, in_channels)

    def layers_sum_ms(self, uses: Iterable[LayerUse]) -> float:
        return float(sum(self.layer_ms(u.signature, u.in_channels, u.out_channels) for u in uses))

    def predict_ms(self, uses: Iterable[LayerUse]) -> float:
        uses = list(uses)
        c = self.calibration
        return c.scale * self.layers_sum_ms(uses) + sum(c.layer_overhead_ms(u) for u in uses) + c.offset_ms

    def calibrated(self, sums_ms: list[float], measured_ms: list[float], layers: list[int] | None = None,
                   heights: list[dict[int, int]] | None = None) -> LatencyTable:  # fmt: skip
        """This table with a calibration fitted on (layer sum, measured latency) pairs, and the models' numbers
        of layers when given; one pair fits the scale alone. The per-layer term is fitted when the layer counts
        differ and at least four models were measured, and kept only when the fit keeps the scale positive.
        `heights` (each model's number of layers per input height) fits one per-layer term per height whose count
        varies instead, when there are at least twice as many models as terms (see `_fit_by_height`)."""
        x, y = np.asarray(sums_ms, float), np.asarray(measured_ms, float)
        if len(x) == 0:
            raise ConfigError("calibrating a latency table needs at least one measured model")
        if len(x) == 1 or np.ptp(x) == 0:
            return LatencyTable(self.entries, Calibration(float(y.mean() / x.mean()), 0.0, len(x)))
        if heights is not None:
            by_height = _fit_by_height(x, y, heights)
            if by_height is not None:
                return LatencyTable(self.entries, by_height)
        counts = np.asarray(layers if layers is not None else [0] * len(x), float)
        if len(x) >= 4 and np.ptp(counts) > 0:
            (scale, per_layer, offset), *_ = np.linalg.lstsq(np.stack([x, counts, np.ones_like(x)], 1), y, rcond=None)
            if scale > 0:
                return LatencyTable(self.entries, Calibration(float(scale), float(offset), len(x), float(per_layer)))
        scale, offset = np.polyfit(x, y, 1)
        return LatencyTable(self.entries, Calibration(float(scale), float(offset), len(x)))


def _fit_by_height(x: np.ndarray, y: np.ndarray, heights: list[dict[int, int]]) -> Calibration | None:
    """scale · sum + one per-layer term per input height whose layer count varies over the models + offset, when
    there are at least twice as many models as terms, the terms are identifiable and the scale stays positive; else
    None. Why by height: under OpenVINO int8 the one-layer cells misjudge a residual block's cost in the model
    differently at each feature-map size (ResNet-56 stage 3: 30 µs in the model, 45 in the cells; stage 2: 31 vs
    18), and the planner then removes the blocks the cells over-price (benchmarks/RESULTS.md, issue 19)."""
    varying = sorted(h for h in {h for counts in heights for h in counts}
                     if np.ptp([counts.get(h, 0) for counts in heights]) > 0)  # fmt: skip
    columns = [x, *(np.asarray([counts.get(h, 0) for counts in heights], float) for h in varying), np.ones_like(x)]
    design = np.stack(columns, 1)
    if not varying or len(x) < 2 * design.shape[1] or np.linalg.matrix_rank(design) < design.shape[1]:
        return None
    coefficients, *_ = np.linalg.lstsq(design, y, rcond=None)
    scale, *per_height, offset = (float(c) for c in coefficients)
    if scale <= 0:
        return None
    return Calibration(scale, offset, len(x), 0.0, {str(h): b for h, b in zip(varying, per_height)})


def _interpolate(xs: list[int], ys: list[float], x: float) -> float:
    if len(xs) == 1:
        return ys[0] * x / xs[0]
    if x <= xs[0]:
        return ys[0] * x / xs[0]
    if x >= xs[-1]:
        return ys[-1] * x / xs[-1]
    return float(np.interp(x, xs, ys))


def measure_missing(
    needed: list[tuple[LayerSignature, int, int]],
    cache: EntryCache,
    measure: Callable[[LayerSignature, int, int], TableEntry],
    on_progress: Callable[[int, int], None] | None = None,
    passes: int = 1,
) -> tuple[dict[tuple[str, int, int], TableEntry], int, int]:
    """Measure the needed entries the cache lacks, appending each as soon as it is measured. With `passes` > 1,
    every entry is measured again in later passes (in reverse order, so a slow spell of the machine lands on
    different entries) and keeps the lowest median; each pass is cached too. Returns all needed entries, how many
    were measured for the first time now, and how many repeat measurements were made now. An interruption keeps
    everything measured before it."""
    cached = cache.load()
    first = [n for n in needed if (n[0].key, n[1], n[2]) not in cached]
    total = len(first) + sum(
        max(0, passes - cached[(s.key, i, o)].passes) for s, i, o in needed if (s.key, i, o) in cached
    )
    total += len(first) * (passes - 1)
    done = 0
    for signature, cin, cout in first:
        entry = measure(signature, cin, cout)
        cache.append(entry)
        cached[entry.key] = entry
        done += 1
        if on_progress:
            on_progress(done, total)
    repeats = 0
    for _ in range(passes - 1):
        for signature, cin, cout in reversed(needed):
            old = cached[(signature.key, cin, cout)]
            if old.passes >= passes:
                continue
            new = measure(signature, cin, cout)
            best = new if new.median_ms < old.median_ms else old
            entry = dataclasses.replace(best, passes=old.passes + 1)
            cache.append(entry)
            cached[entry.key] = entry
            repeats += 1
            done += 1
            if on_progress:
                on_progress(done, total)
    wanted = {(s.key, i, o) for s, i, o in needed}
    return {k: v for k, v in cached.items() if k in wanted}, len(first), repeats
