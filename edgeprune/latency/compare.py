"""Models timed against each other: interleaved rounds in one agent session, and the statistics of their ratios.

A slow spell of a shared machine (seconds long) scales every model timed in it, so a model is judged by its ratio to
a reference timed next to it, round by round, not by its own median alone. Used by the build's comparisons, the
latency table's end-to-end variants (edgeprune/latency/lut.py) and benchmarks/export_accuracy.py.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from edgeprune.progress import Progress
from edgeprune.types import Artifact, LatencyStats, TargetProfile
from edgeprune.types.agent import BenchResult

if TYPE_CHECKING:
    from edgeprune.devices.agent_client import AgentSession

COMPARISON_S = 2.0  # seconds of timed runs of the unpruned model before a comparison checks its precision
# A comparison adds rounds until every speedup's standard error is under SPEEDUP_SE (relative) or it has run
# COMPARISON_MAX_S seconds / COMPARISON_MAX_ROUNDS rounds. Measured on the 2-core CI VM, ResNet-20 (0.6 ms) against
# a 1.25x faster plan, 2 threads, 8 sessions each: 15 rounds of 30 runs gave speedups 1.18-1.41 (sd 0.079); 80 rounds,
# 1.23-1.27 (sd 0.015). Each round loads the model afresh, and that per-load spread, not the runs per round,
# dominates. With every core timed (2 threads on 2 cores) any other process stalls a thread: another pair's sessions
# spread 1.40-1.60 at 1.5 % standard error each; with 1 thread, 1.663-1.679 at 0.1-0.2 %.
SPEEDUP_SE = 0.015
TRUSTED_CYCLES = 10  # a standard error from fewer cycles is itself too rough to stop on (stopped early, low by chance)
COMPARISON_MAX_S = 20.0
COMPARISON_MAX_ROUNDS = 250


class TimingOptions(Protocol):
    """How each model is timed in a round (edgeprune.build's BuildOptions has these)."""

    runs: int  # timed runs
    warmup: int  # untimed runs before them
    threads: int | None  # None: the target's


def round_median(result: BenchResult) -> float:
    """The median of one bench's runs: a model's figure for one round."""
    return float(np.median(result.timings_ms))


def timed_rounds(agent: AgentSession, models: dict[str, tuple[Path, str]], *, threads: int | None, warmup: int,
                 runs: int, turn: bool, on_timed: Callable[[int], None] | None = None,
                 ) -> Iterator[dict[str, BenchResult]]:  # fmt: skip
    """Round after round (until the caller stops), each model ({name: (file, runtime)}) benched once per round in
    `agent`'s session. With `turn` the order turns every round: a model timed right after another (in memory that
    one freed) runs a few percent faster than in a later slot (measured: 2.5-7 % for ResNet-20 on the CI VM).
    `on_timed(i)` follows the round's i-th bench."""
    names = list(models)
    r = 0
    while True:
        start = r % len(names) if turn else 0
        timed = {}
        for i, name in enumerate(names[start:] + names[:start]):
            path, runtime = models[name]
            timed[name] = agent.bench(Path(path), runtime, threads=threads, warmup=warmup, runs=runs)
            if on_timed is not None:
                on_timed(i)
        yield timed
        r += 1


def comparison_rounds(unpruned_ms: float, runs: int) -> int:
    """The first interleaved rounds of a comparison: enough that the unpruned model is timed for COMPARISON_S
    seconds in all, 3 to 15. compare_latency adds more until the speedups are precise."""
    return int(min(15, max(3, math.ceil(COMPARISON_S * 1000 / (unpruned_ms * runs)))))


@dataclass(frozen=True)
class Comparison:
    """Models timed interleaved in one session. `speedup`: over the first model, from the ratio of the two medians
    timed next to each other in a round, averaged (geometric mean) over each cycle of orders, median over cycles;
    `speedup_se`: its relative standard error, from the spread of those cycle ratios (median absolute deviation as
    a normal sd; 1.2533 sd/√n for a median)."""

    latency: dict[str, LatencyStats]
    speedup: dict[str, float]
    speedup_se: dict[str, float]
    rounds: int


class ComparisonFarm(Protocol):
    """A device farm that compares models (edgeprune.farm.Farm; declared here so latency imports no farm)."""

    def compare(self, artifacts: dict[str, Artifact], options: TimingOptions, progress: Progress,
                min_rounds: int) -> Comparison: ...  # fmt: skip


def compare_latency(artifacts: dict[str, Artifact], target: TargetProfile, options: TimingOptions,
                    progress: Progress, min_rounds: int = 3, farm: ComparisonFarm | None = None) -> Comparison:  # fmt: skip
    """Each artifact timed in interleaved rounds in one agent session on the target (see compare_in_session). With
    a `farm`, each model after the first is compared with the first on a device of its own, in parallel."""
    from edgeprune.devices.agent_client import AgentSession
    from edgeprune.devices.transport import transport_for

    if farm is not None:
        return farm.compare(artifacts, options, progress, min_rounds)
    with AgentSession(transport_for(target)) as agent:
        agent.info(target.name, target.runtime)
        paths = {name: Path(artifact.path) for name, artifact in artifacts.items()}
        return compare_in_session(agent, paths, target, options, min_rounds, progress)


def compare_in_session(agent: AgentSession, paths: dict[str, Path], target: TargetProfile, options: TimingOptions,
                       min_rounds: int = 3, progress: Progress | None = None) -> Comparison:  # fmt: skip
    """Each model file timed in interleaved rounds in `agent`'s session; `options.runs` timed runs per round after
    `options.warmup` warm-ups. At least `min_rounds` and 3 cycles, then whole cycles until every speedup's standard
    error is at most SPEEDUP_SE (or COMPARISON_MAX_S / COMPARISON_MAX_ROUNDS is reached). A slow spell of the
    machine scales both models of a round, so it does not move the per-round ratio. The order turns every round,
    and a cycle is one turn through every order (see timed_rounds)."""
    from edgeprune.progress import NoProgress

    progress = progress or NoProgress()
    names, cycle = list(paths), len(paths)
    min_rounds = cycle * max(3, math.ceil(min_rounds / cycle))
    samples: dict[str, list[float]] = {name: [] for name in names}
    medians: dict[str, list[float]] = {name: [] for name in names}
    last: dict[str, BenchResult] = {}
    started = time.monotonic()
    with progress.task(f"latency, interleaved ({', '.join(names)})", min_rounds * cycle) as update:
        rounds = 0
        models = {name: (path, target.runtime) for name, path in paths.items()}
        timed = timed_rounds(agent, models, threads=options.threads or target.threads, warmup=options.warmup,
                             runs=options.runs, turn=True,
                             on_timed=lambda i: update(min(rounds, min_rounds - 1) * cycle + i + 1))  # fmt: skip
        while rounds < min_rounds or rounds % cycle or (
            rounds < COMPARISON_MAX_ROUNDS and time.monotonic() - started < COMPARISON_MAX_S
            and (rounds < TRUSTED_CYCLES * cycle
                 or max(speedup_se(medians[names[0]], medians[name], cycle) for name in names) > SPEEDUP_SE)
        ):  # fmt: skip
            for name, result in next(timed).items():
                samples[name] += result.timings_ms
                medians[name].append(round_median(result))
                last[name] = result
            rounds += 1
    label = agent.transport.label
    speedups = {name: speedup(medians[names[0]], medians[name], cycle) for name in names}
    errors = {name: speedup_se(medians[names[0]], medians[name], cycle) for name in names}
    method = (
        f"measured: {label} agent, {rounds} interleaved rounds of {options.runs} runs (after {options.warmup} "
        f"warm-up) per model in one session, order turned every round, pooled; speedup = median over "
        f"{rounds // cycle} cycles of the {names[0]} model's median over this model's, timed next to each other "
        f"(standard error {100 * max(errors.values()):.1f} % or less)"
    )
    latency = {name: _with_energy(last[name].latency_stats(method, pooled_ms=values), target)
               for name, values in samples.items()}  # fmt: skip
    return Comparison(latency, speedups, errors, rounds)


def _with_energy(stats: LatencyStats, target: TargetProfile) -> LatencyStats:
    """The comparison samples no power sensor, so each model's energy is the target's estimate from its median, or
    unavailable with the reason (the report shows it)."""
    import dataclasses

    from edgeprune.devices.energy import energy_for

    energy = energy_for(target, stats.median_ms, stats.batch)
    return dataclasses.replace(stats, energy=energy.energy, energy_mj=energy.energy_mj, power_w=energy.power_w,
                               energy_note=energy.note)  # fmt: skip


def format_speedup(value: float, se: float | None) -> str:
    """ "2.31×", with " ± 1.5 %" (the relative standard error) when known."""
    return f"{value:.2f}×" + (f" ± {100 * se:.1f} %" if se else "")


def cycle_log_ratios(reference_ms: Sequence[float], model_ms: Sequence[float], cycle: int) -> np.ndarray:
    """log(reference / model) per round, averaged over each whole cycle of `cycle` rounds."""
    logs = np.log(np.divide(reference_ms, model_ms))
    whole = len(logs) // cycle * cycle
    return logs[:whole].reshape(-1, cycle).mean(axis=1)


def speedup(reference_ms: Sequence[float], model_ms: Sequence[float], cycle: int = 1) -> float:
    """The reference's median over the model's, round by round: the median over cycles of their geometric mean."""
    return math.exp(float(np.median(cycle_log_ratios(reference_ms, model_ms, cycle))))


def speedup_se(reference_ms: Sequence[float], model_ms: Sequence[float], cycle: int = 1) -> float:
    """Relative standard error of the median over cycles of the ratio (MAD as a normal sd; a median's error is
    1.2533 sd/√n); inf below 3 cycles."""
    logs = cycle_log_ratios(reference_ms, model_ms, cycle)
    if len(logs) < 3:
        return math.inf
    sd = 1.4826 * float(np.median(np.abs(logs - np.median(logs))))
    return 1.2533 * sd / math.sqrt(len(logs))


def relative_latency_ms(relative: Sequence[float], reference_ms: float) -> float:
    """A model's latency from its per-round ratios to a reference timed just before it: the median ratio times the
    reference's median (robust to slow spells, which scale both)."""
    return float(np.median(relative)) * reference_ms
