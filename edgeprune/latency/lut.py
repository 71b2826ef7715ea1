"""Build a model's latency lookup table on a target, calibrate it, and report how well it predicts.

Through one agent session: time the cells the table lacks (each layer alone and as summed copies; cached per
device, resumable), then
measure the unpruned model and randomly pruned variants end to end. The unpruned model, the block variants (see
`_block_variants`) and the first `calibration_variants` random variants fit the calibration; the other variants are
held out, and the report gives the calibrated prediction's mean absolute percentage error (MAPE) on them.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from edgeprune.backends._registry import get_backend
from edgeprune.backends.base import Backend
from edgeprune.devices.agent_client import AgentSession
from edgeprune.devices.transport import scratch_dir, transport_for
from edgeprune.errors import ConfigError
from edgeprune.latency.cells import (
    CELLS,
    LAYER_PASSES,
    LAYER_RUNS,
    LAYER_WARMUP,
    CellTimer,
    cell_method,
    timing_calibration,
)
from edgeprune.latency.compare import relative_latency_ms, round_median
from edgeprune.latency.microbench import layer_uses
from edgeprune.latency.table import (
    Calibration,
    EntryCache,
    LatencyTable,
    TableEntry,
    cache_root,
    device_key,
    measure_missing,
    needed_entries,
)  # fmt: skip
from edgeprune.models.base import LoadedModel
from edgeprune.progress import NoProgress, Progress
from edgeprune.types import Artifact, DeviceInfo, LatencyStats, Record, TargetProfile
from edgeprune.types.agent import BenchResult
from edgeprune.types.farm import FarmReport


class TableFarm(Protocol):
    """What the table needs of a device farm (edgeprune.farm.Farm; declared here so latency imports no farm)."""

    name: str
    devices: tuple
    device_info: DeviceInfo  # the first device's

    def cache_key(self, threads: int, precision: str, cells: str) -> str: ...

    def reference(self, artifacts: dict[str, Artifact], runtime: str, threads: int, runs: int) -> None: ...

    def measure_missing(self, needed, cache: EntryCache, runtime: str, precision: str, threads: int, on_progress,
                        passes: int) -> tuple[dict, int, int]: ...  # fmt: skip

    def time_variants(self, artifacts: list[Artifact], runtime: str, threads: int, runs: int, warmup: int,
                      on_progress) -> TimedVariants: ...  # fmt: skip

    def report(self) -> FarmReport: ...


DEFAULT_STEP = 8  # grid granularity when the target profile gives no sourced hardware step
# End-to-end models are timed in interleaved rounds, at least ROUNDS, and more while they fit in ROUNDS_TIME_S (at
# most MAX_ROUNDS); the median round counts. Sub-millisecond models vary by 50-200 % run to run on a shared 2-core
# VM, so their few seconds per round buy precision cheaply; a 100 ms detector stays at ROUNDS.
ROUNDS, MAX_ROUNDS, ROUNDS_TIME_S = 3, 15, 60.0


@dataclass(frozen=True)
class VariantLatency(Record):
    """One model measured end to end and predicted by the table."""

    name: str
    role: str  # calibration | evaluation
    removed_blocks: int
    macs: int
    layers_sum_ms: float
    predicted_ms: float
    measured: LatencyStats  # every timed run, pooled
    round_medians_ms: tuple[float, ...] = ()
    relative_to_unpruned: tuple[float, ...] = ()  # per round: its median / the unpruned median timed just before
    unpruned_ms: float | None = None  # the unpruned model's median over the whole measurement
    device: str | None = None  # the farm device that timed it (None: the target's one device)

    @property
    def measured_ms(self) -> float:
        """The median over rounds of the ratio to the unpruned model timed just before, times the unpruned model's
        median: robust to the machine's slow spells, which scale both."""
        if self.relative_to_unpruned and self.unpruned_ms:
            return relative_latency_ms(self.relative_to_unpruned, self.unpruned_ms)
        return float(np.median(self.round_medians_ms)) if self.round_medians_ms else self.measured.median_ms

    @property
    def error(self) -> float:
        return self.predicted_ms / self.measured_ms - 1


@dataclass(frozen=True)
class LutReport(Record):
    model: str
    target: str
    device_key: str
    runtime: str
    threads: int
    step: int
    entries: tuple[TableEntry, ...]
    measured_now: int  # entries measured for the first time now
    from_cache: int
    remeasured_now: int  # repeat passes made now (LAYER_PASSES)
    corrupted_lines: int  # damaged cache lines found, measured again
    calibration: Calibration
    variants: tuple[VariantLatency, ...]
    mape_percent: float | None  # over the evaluation variants
    cache_file: str
    method: str
    emulation: str | None = None  # emulation_label's text when the device's CPU was emulated
    precision: str = "fp32"  # what the cells and variants were timed at (the target's)
    farm: FarmReport | None = None  # when a device farm measured it: its devices, reference timings and spread

    _volatile = ("cache_file", "measured_now", "from_cache", "remeasured_now", "corrupted_lines")

    def table(self) -> LatencyTable:
        return LatencyTable({e.key: e for e in self.entries}, self.calibration)

    def summary(self) -> str:
        evaluation = [v for v in self.variants if v.role == "evaluation"]
        mape = f"{self.mape_percent:.1f} %" if self.mape_percent is not None else "n/a"
        return (f"latency table ({self.runtime} {self.precision}): {len(self.entries)} layer entries "
                f"({self.measured_now} measured now, "
                f"{self.from_cache} from the cache, {self.remeasured_now} repeat passes, {self.corrupted_lines} "
                "damaged cache lines not trusted); "
                f"calibration {_describe(self.calibration)} on {self.calibration.n} models; prediction MAPE {mape} "
                f"over {len(evaluation)} held-out pruned "
                "variants" + (f"; {self.emulation}" if self.emulation else "")
                + (f"; {self.farm.summary()}" if self.farm else ""))  # fmt: skip


def _describe(c: Calibration) -> str:
    by_height = ", ".join(f"{float(b) * 1000:+.1f} µs at {h}²" for h, b in c.per_layer_by_height_ms.items())
    layers = f"per layer by input height ({by_height})" if by_height else f"{c.per_layer_ms * 1000:+.1f} µs × layers"
    return f"{c.scale:.3f} × sum, {layers}, {c.offset_ms:+.3f} ms"


def build_lut(
    model: LoadedModel,
    target: TargetProfile,
    out_dir: Path,
    *,
    threads: int | None = None,
    step: int | None = None,
    variants: int = 10,
    calibration_variants: int = 8,
    runs: int = 50,
    warmup: int = 10,
    cache_dir: Path | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    farm: TableFarm | None = None,
) -> LutReport:
    """Measure (or reuse) the table for `model` on `target`, calibrate it and evaluate it on `variants` held-out
    random prunings; writes out_dir/lut.json."""
    if variants < 0 or calibration_variants < 0:
        raise ConfigError("the numbers of variants must be ≥ 0")
    progress = progress or NoProgress()
    step = step or DEFAULT_STEP
    backend = get_backend(target.runtime).for_target(target)  # TensorRT: engines built on the device
    backend.check_precision(target.precision)
    uses = layer_uses(model)
    needed = needed_entries(uses, step)
    random = _random_variants(model, calibration_variants + variants, step, seed)
    blocks = _block_variants(model, uses) if calibration_variants else []
    if 1 + len(blocks) + calibration_variants < 2 * (len(blocks) + 2):
        blocks = []  # too few models to fit a term per height: they would not be used
    models = [("unpruned", 0, model), *blocks, *random]
    scratch = scratch_dir()
    try:
        return _build(model, target, out_dir, backend, uses, needed, models, scratch, threads=threads, step=step,
                      calibration_variants=len(blocks) + calibration_variants, runs=runs, warmup=warmup,
                      cache_dir=cache_dir, progress=progress, farm=farm)  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _build(model, target, out_dir, backend, uses, needed, models, scratch, *, threads, step, calibration_variants,
           runs, warmup, cache_dir, progress, farm) -> LutReport:  # fmt: skip
    cache_folder = cache_dir or cache_root() / "lut"
    if farm is not None:  # cells spread over the farm's devices, variants timed one share per device
        device = farm.device_info
        threads = threads or target.threads or device.cpu_count
        cache = EntryCache(cache_folder / f"{farm.cache_key(threads, target.precision, CELLS)}.jsonl")
        artifacts = _export_variants(backend, target, models, scratch, progress)
        farm.reference({"unpruned": artifacts[0]}, target.runtime, threads, runs)  # the devices on one scale
        with progress.task(f"latency table on farm {farm.name}", len(needed) * LAYER_PASSES) as update:
            entries, measured_now, remeasured = farm.measure_missing(
                needed, cache, target.runtime, target.precision, threads, lambda done, total: update(done),
                LAYER_PASSES)  # fmt: skip
        with progress.task("end-to-end variants", len(models) * ROUNDS) as update:
            timed = farm.time_variants(artifacts, target.runtime, threads, runs, warmup, update)
        label = f"farm {farm.name} ({len(farm.devices)} devices)"
    else:
        with AgentSession(transport_for(target)) as agent:
            device = agent.info(target.name, target.runtime)
            threads = threads or target.threads or device.cpu_count
            cache = EntryCache(cache_folder / f"{device_key(device, threads, target.precision, CELLS)}.jsonl")
            timer = CellTimer(agent, target, threads, scratch)
            with progress.task(f"latency table on {target.name}", len(needed) * LAYER_PASSES) as update:
                entries, measured_now, remeasured = measure_missing(
                    needed, cache, timer.measure, lambda done, total: update(done), LAYER_PASSES
                )
            artifacts = _export_variants(backend, target, models, scratch, progress)
            with progress.task("end-to-end variants", len(models) * ROUNDS) as update:
                timed = time_variants(agent, [a.path for a in artifacts], target.runtime, threads, runs, warmup,
                                      lambda r, k: update(min(r, ROUNDS - 1) * len(models) + k + 1))  # fmt: skip
            label = f"{agent.transport.label} agent"
    table = LatencyTable(entries)
    r = timed.rounds
    unpruned_ms = timed.unpruned_ms
    measured = []
    method = (f"measured: {label}, {r} interleaved rounds of {runs} runs, pooled; judged as the median over "
              "rounds of its median over the unpruned model's median timed just before it (on the same device), "
              "times the unpruned model's overall median")  # fmt: skip
    for (name, blocks, variant), per_round, references in zip(models, timed.results, timed.before):
        medians = tuple(round_median(t) for t in per_round)
        stats = per_round[-1].latency_stats(method, pooled_ms=[t for timed in per_round for t in timed.timings_ms])
        relative = tuple(m / ref for m, ref in zip(medians, references))
        measured.append((name, blocks, variant, stats, medians, relative))
    n_fit = 1 + calibration_variants
    variant_uses = [layer_uses(m[2]) for m in measured]
    sums = [table.layers_sum_ms(uses) for uses in variant_uses]
    results = [
        VariantLatency(name, "calibration" if k < n_fit else "evaluation", blocks, _macs(variant), total, 0.0, stats,
                       medians, relative, unpruned_ms, device)
        for k, ((name, blocks, variant, stats, medians, relative), total, device) in enumerate(
            zip(measured, sums, timed.devices))
    ]  # fmt: skip
    table = table.calibrated(sums[:n_fit], [v.measured_ms for v in results[:n_fit]],
                             [len(uses) for uses in variant_uses[:n_fit]],
                             [dict(Counter(u.signature.height for u in uses)) for uses in variant_uses[:n_fit]])  # fmt: skip
    results = tuple(
        dataclasses.replace(v, predicted_ms=table.predict_ms(uses)) for v, uses in zip(results, variant_uses)
    )
    errors = [abs(v.error) for v in results if v.role == "evaluation"]
    report = LutReport(
        model=model.spec, target=target.name, device_key=cache.path.stem, runtime=target.runtime, threads=threads,
        step=step, entries=tuple(entries.values()), measured_now=measured_now,
        from_cache=len(entries) - measured_now, remeasured_now=remeasured, corrupted_lines=cache.corrupted,
        calibration=table.calibration,
        variants=results, mape_percent=100 * float(np.mean(errors)) if errors else None,
        cache_file=str(cache.path),
        method=(f"cells: {CELLS} (conv/linear + fused activation; {cell_method(backend, target.precision)}), "
                f"{target.runtime} {target.precision}, medians of {LAYER_RUNS} runs after "
                f"{LAYER_WARMUP} warm-up, fastest of {LAYER_PASSES} passes, widths on multiples of {step}; sum "
                f"interpolated bilinearly, calibrated linearly on {n_fit} end-to-end models (median of {r} "
                f"interleaved rounds of {runs} runs each, relative to the unpruned model timed just before)"),
        emulation=device.emulation_label,
        precision=target.precision,
        farm=farm.report() if farm is not None else None,
    )  # fmt: skip
    report.save(out_dir / "lut.json")
    return report


def _export_variants(backend: Backend, target: TargetProfile, models, scratch: Path, progress: Progress):
    artifacts = []
    with progress.task(f"export the end-to-end variants to {target.runtime}", len(models)) as update:
        for name, _, variant in models:
            calibration = timing_calibration(backend, target.precision, variant)
            artifacts.append(backend.export(variant, scratch / name, target.precision, calibration=calibration))
            update(len(artifacts))
    return artifacts


@dataclass(frozen=True)
class TimedVariants:
    """The end-to-end models timed in interleaved rounds: per model its rounds and the unpruned model's median
    timed just before each (on the same device), and which device timed it (None: the target's one device)."""

    results: list[list[BenchResult]]
    before: list[list[float]]
    rounds: int
    unpruned_ms: float  # the unpruned model's median over every round (on a farm: on the farm's scale)
    devices: list[str | None]


def time_variants(agent, paths: list[Path], runtime: str, threads: int, runs: int, warmup: int,
                  on_timed=None) -> TimedVariants:  # fmt: skip
    """`paths[0]` (the unpruned model) and the others in interleaved rounds in `agent`'s session, each other one
    right after the unpruned model: a slow spell of the machine scales both, their ratio stays. At least ROUNDS,
    more while they fit in ROUNDS_TIME_S (at most MAX_ROUNDS). `on_timed(round, k)` follows each model's bench."""
    rounds: list[list[BenchResult]] = [[] for _ in paths]
    before: list[list[float]] = [[] for _ in paths]
    started, r = time.monotonic(), 0
    while r < ROUNDS or (r < MAX_ROUNDS and (time.monotonic() - started) * (r + 1) / r <= ROUNDS_TIME_S):
        for k, path in enumerate(paths):
            if k:
                reference = agent.bench(paths[0], runtime, threads=threads, warmup=2, runs=runs)
                before[k].append(round_median(reference))
            rounds[k].append(agent.bench(path, runtime, threads=threads, warmup=warmup, runs=runs))
            if not k:
                before[0].append(round_median(rounds[0][-1]))
            if on_timed is not None:
                on_timed(r, k)
        r += 1
    unpruned_ms = float(np.median([m for medians in before for m in medians]))
    return TimedVariants(rounds, before, r, unpruned_ms, [None] * len(paths))


BLOCK_VARIANT_BLOCKS = 4  # blocks removed per height in a block variant (ResNet-56: layer<s>.1, .3, .5, .7)


def _block_variants(model: LoadedModel, uses) -> list[tuple[str, int, LoadedModel]]:
    """For each input height with at least two removable residual blocks, the model with every other one of them
    (at most BLOCK_VARIANT_BLOCKS) removed and its widths untouched: calibration models from which the fit learns
    what a block at that height costs inside the model (`LatencyTable.calibrated`'s terms by height), which the
    random variants, removing blocks by γ together with channels, leave confounded."""
    from edgeprune.prune.depth import block_layers, removable_blocks, remove_blocks

    try:
        blocks = removable_blocks(model)
    except ConfigError:
        return []
    prefixes = block_layers(model, blocks)
    by_height: dict[int, list[str]] = defaultdict(list)
    for block in blocks:
        heights = {u.signature.height for u in uses if u.name.startswith(prefixes[block.name])}
        if len(heights) == 1:
            by_height[heights.pop()].append(block.name)
    variants = []
    for height, names in sorted(by_height.items()):
        if len(names) < 2:
            continue
        chosen = names[::2][:BLOCK_VARIANT_BLOCKS]
        variant = copy.deepcopy(model)
        remove_blocks(variant, names=chosen)
        variants.append((f"blocks-h{height}-{len(chosen)}", len(chosen), variant))
    return variants


def _random_variants(model: LoadedModel, count: int, step: int, seed: int) -> list[tuple[str, int, LoadedModel]]:
    """Randomly pruned copies: a random share of channels (random scores, a random scale per group, global
    ranking, so layers keep different widths) and, where the model has residual blocks, a random number of them
    removed (lowest γ first)."""
    from edgeprune.prune.channels import prune_channels
    from edgeprune.prune.depth import removable_blocks, remove_blocks

    try:
        removable = len(removable_blocks(model))
    except ConfigError:
        removable = 0
    rng = np.random.default_rng(seed)
    variants = []
    for k in range(count):
        variant = copy.deepcopy(model)
        blocks = int(rng.integers(0, removable + 1))  # the planner may remove any number: span that range
        if blocks:
            remove_blocks(variant, n=blocks)
        ratio = float(rng.uniform(0.15, 0.6))
        prune_channels(variant, ratio, "random", round_to=step, global_ranking=True, seed=seed * 1000 + k)
        variants.append((f"variant{k}-r{ratio:.2f}-b{blocks}", blocks, variant))
    return variants


def _macs(model: LoadedModel) -> int:
    from edgeprune.prune.channels import count_macs_params

    return count_macs_params(model)[0]
