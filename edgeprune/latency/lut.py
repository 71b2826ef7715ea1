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

import numpy as np

from edgeprune.backends._registry import get_backend
from edgeprune.backends.base import Backend
from edgeprune.devices.agent_client import AgentSession
from edgeprune.devices.transport import scratch_dir, transport_for
from edgeprune.errors import ConfigError
from edgeprune.latency.compare import relative_latency_ms, round_median
from edgeprune.latency.microbench import layer_uses, single_layer_model, single_layer_onnx
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
from edgeprune.types import Artifact, LatencyStats, Record, TargetProfile
from edgeprune.types.agent import BenchResult

DEFAULT_STEP = 8  # grid granularity when the target profile gives no sourced hardware step
LAYER_WARMUP, LAYER_RUNS = 5, 30
LAYER_PASSES = (
    2  # each layer timed twice, far apart in time; the faster median is kept (slow spells of shared machines)
)
# End-to-end models are timed in interleaved rounds, at least ROUNDS, and more while they fit in ROUNDS_TIME_S (at
# most MAX_ROUNDS); the median round counts. Sub-millisecond models vary by 50-200 % run to run on a shared 2-core
# VM, so their few seconds per round buy precision cheaply; a 100 ms detector stays at ROUNDS.
ROUNDS, MAX_ROUNDS, ROUNDS_TIME_S = 3, 15, 60.0
# A cell is timed twice: the layer alone in a model, and CELL_COPIES copies of it (own weights) reading one input,
# summed; its entry is the cost of one more copy. A one-layer model pays the runtime's per-run costs (the call, the
# layout reorders, waking the thread pool) that a layer inside a model does not: on the 2-core host, ONNX Runtime,
# ResNet-56's cells timed alone took the same at 1 and 2 threads while the model ran 1.39x faster on 2, the table's
# calibration fell to 0.41 x sum, and the planner's picks came out 8-22 % optimistic (benchmarks/RESULTS.md).
CELL_COPIES = 4
CELLS = f"one copy more of {CELL_COPIES} summed copies vs the layer alone"
TIMING_CALIBRATION = 8  # random inputs an int8 cell or variant is calibrated on: it is timed, never scored


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
                "variants" + (f"; {self.emulation}" if self.emulation else ""))  # fmt: skip


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
) -> LutReport:
    """Measure (or reuse) the table for `model` on `target`, calibrate it and evaluate it on `variants` held-out
    random prunings; writes out_dir/lut.json."""
    if variants < 0 or calibration_variants < 0:
        raise ConfigError("the numbers of variants must be ≥ 0")
    progress = progress or NoProgress()
    step = step or DEFAULT_STEP
    backend = get_backend(target.runtime)
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
                      cache_dir=cache_dir, progress=progress)  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _build(model, target, out_dir, backend, uses, needed, models, scratch, *, threads, step, calibration_variants,
           runs, warmup, cache_dir, progress) -> LutReport:  # fmt: skip
    with AgentSession(transport_for(target)) as agent:
        device = agent.info(target.name, target.runtime)
        threads = threads or target.threads or device.cpu_count
        cache = EntryCache(
            (cache_dir or cache_root() / "lut") / f"{device_key(device, threads, target.precision, CELLS)}.jsonl"
        )

        def measure(signature, cin, cout) -> TableEntry:
            alone, summed = (
                agent.bench(_cell(backend, target.precision, signature, cin, cout, scratch, copies),
                            target.runtime, threads=threads, warmup=LAYER_WARMUP, runs=LAYER_RUNS).latency_stats()
                for copies in (1, CELL_COPIES)
            )  # fmt: skip
            per_copy = (summed.median_ms - alone.median_ms) / (CELL_COPIES - 1)
            per_copy_p90 = (summed.p90_ms - alone.median_ms) / (CELL_COPIES - 1)
            return TableEntry(signature, cin, cout, max(per_copy, 0.0), max(per_copy_p90, 0.0), summed.n,
                              target.runtime, threads, alone_ms=alone.median_ms)  # fmt: skip

        with progress.task(f"latency table on {target.name}", len(needed) * LAYER_PASSES) as update:
            entries, measured_now, remeasured = measure_missing(
                needed, cache, measure, lambda done, total: update(done), LAYER_PASSES
            )
        table = LatencyTable(entries)
        artifacts = []
        with progress.task(f"export the end-to-end variants to {target.runtime}", len(models)) as update:
            for name, _, variant in models:
                calibration = _timing_calibration(backend, target.precision, variant)
                artifacts.append(backend.export(variant, scratch / name, target.precision, calibration=calibration))
                update(len(artifacts))
        rounds: list[list[BenchResult]] = [[] for _ in models]
        before: list[list[float]] = [[] for _ in models]  # the unpruned model's median just before each timing
        reference_runs = runs
        started, r = time.monotonic(), 0
        with progress.task("end-to-end variants", len(models) * ROUNDS) as update:
            while r < ROUNDS or (r < MAX_ROUNDS and (time.monotonic() - started) * (r + 1) / r <= ROUNDS_TIME_S):
                # interleaved: a slow spell of the machine hits one round of several models
                for k, artifact in enumerate(artifacts):
                    if k:  # the unpruned model right before: a slow spell scales both, their ratio stays
                        reference = agent.bench(artifacts[0].path, target.runtime, threads=threads, warmup=2,
                                                runs=reference_runs)  # fmt: skip
                        before[k].append(round_median(reference))
                    rounds[k].append(agent.bench(artifact.path, target.runtime, threads=threads, warmup=warmup,
                                                 runs=runs))  # fmt: skip
                    if not k:
                        before[0].append(round_median(rounds[0][-1]))
                    update(min(r, ROUNDS - 1) * len(models) + k + 1)
                r += 1
        label = agent.transport.label
    unpruned_ms = float(np.median([m for medians in before for m in medians]))
    measured = []
    method = (f"measured: {label} agent, {r} interleaved rounds of {runs} runs, pooled; judged as the median over "
              "rounds of its median over the unpruned model's median timed just before it, times the unpruned "
              "model's overall median")  # fmt: skip
    for (name, blocks, variant), per_round, references in zip(models, rounds, before):
        medians = tuple(round_median(t) for t in per_round)
        stats = per_round[-1].latency_stats(method, pooled_ms=[t for timed in per_round for t in timed.timings_ms])
        relative = tuple(m / ref for m, ref in zip(medians, references))
        measured.append((name, blocks, variant, stats, medians, relative))
    n_fit = 1 + calibration_variants
    variant_uses = [layer_uses(m[2]) for m in measured]
    sums = [table.layers_sum_ms(uses) for uses in variant_uses]
    results = [
        VariantLatency(name, "calibration" if k < n_fit else "evaluation", blocks, _macs(variant), total, 0.0, stats,
                       medians, relative, unpruned_ms)
        for k, ((name, blocks, variant, stats, medians, relative), total) in enumerate(zip(measured, sums))
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
        method=(f"cells: {CELLS} (conv/linear + fused activation; {_cell_method(backend, target.precision)}), "
                f"{target.runtime} {target.precision}, medians of {LAYER_RUNS} runs after "
                f"{LAYER_WARMUP} warm-up, fastest of {LAYER_PASSES} passes, widths on multiples of {step}; sum "
                f"interpolated bilinearly, calibrated linearly on {n_fit} end-to-end models (median of {r} "
                f"interleaved rounds of {runs} runs each, relative to the unpruned model timed just before)"),
        emulation=device.emulation_label,
        precision=target.precision,
    )  # fmt: skip
    report.save(out_dir / "lut.json")
    return report


def _cell(backend: Backend, precision: str, signature, cin: int, cout: int, scratch: Path, copies: int) -> Path:
    """A cell's model (the layer alone, or `copies` summed copies of it) in the target's format and precision, built
    by that runtime's own export (and quantizer) as a shipped model is; ONNX fp32 is written directly (the same
    graph, without a PyTorch export)."""
    if _written_directly(backend, precision):
        return single_layer_onnx(signature, cin, cout, scratch / f"layer{copies}.onnx", copies)
    folder = scratch / f"cell-{signature.key}-{cin}-{cout}-{copies}"  # kept for the repeat pass: one export a cell
    done = folder / "artifact.json"
    if done.is_file():
        return Artifact.load(done).path
    cell = single_layer_model(signature, cin, cout, copies)
    artifact = backend.export(cell, folder, precision, calibration=_timing_calibration(backend, precision, cell))
    artifact.save(done)
    return artifact.path


def _written_directly(backend: Backend, precision: str) -> bool:
    """ONNX fp32 cells are written as ONNX by microbench, not exported from PyTorch by the backend."""
    return backend.format == "onnx" and precision == "fp32"


def _cell_method(backend: Backend, precision: str) -> str:
    if _written_directly(backend, precision):
        return "written as ONNX directly"
    how = f"exported by the {backend.name} backend as a shipped model is"
    if precision in backend.calibrated:
        how += (
            f", {precision} calibrated on {TIMING_CALIBRATION} random inputs (timing only: the ranges change no kernel)"
        )
    return how


def _timing_calibration(backend: Backend, precision: str, model: LoadedModel) -> np.ndarray | None:
    """Random inputs for the quantizer of a model that is only timed; None for a precision that takes none."""
    if precision not in backend.calibrated:
        return None
    shape = model.inputs[0].concrete_shape(TIMING_CALIBRATION)
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


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
