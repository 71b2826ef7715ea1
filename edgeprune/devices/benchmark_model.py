"""Parser for the output of TFLite's `benchmark_model` tool (tensorflow/lite/tools/benchmark), for devices where
the vendor's build of that tool is the way to time a .tflite (Android with NNAPI/GPU delegates, i.MX, TI SDKs).

Handles the summary line of every published generation, each test-checked against real output
(tests/devices/test_benchmark_model.py cites them):
  current   "Inference timings in us: Init: 17187, First inference: 3512391, Warmup (avg): 3.51239e+06,
             Inference (avg): 2.95034e+06"
  inference "Average inference timings in us: Warmup: 83235, Init: 38467, Inference: 79760.9"
  no_stats  "Average inference timings in us: Warmup: 751932, Init: 21039, no stats: 747733"
and the per-phase statistics lines "count=50 first=.. curr=.. min=.. max=.. avg=.. std=.." with or without the
newer " p5=.. median=.. p95=.." tail, "count=1 curr=.." when all runs took the same time, and the older
"curr=.. count=.." order. Lines may carry a log prefix ("INFO: ", "I tflite  : ").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NUM = r"([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)"
_SUMMARIES = (
    (
        "current",
        re.compile(
            rf"Inference timings in us: Init: {_NUM}, First inference: {_NUM}, "
            rf"Warmup \(avg\): {_NUM}, Inference \(avg\): {_NUM}"
        ),
    ),
    (
        "inference",
        re.compile(
            rf"Average inference timings in us: Warmup: {_NUM}, (?:Init: {_NUM}, )?"
            rf"Inference: {_NUM}"
        ),
    ),
    (
        "no_stats",
        re.compile(
            rf"Average inference timings in us: Warmup: {_NUM}, (?:Init: {_NUM}, )?"
            rf"no stats: {_NUM}"
        ),
    ),
)
_STATS_START = re.compile(r"(?:^|\s)((?:count|curr)=\S.*)$")
_PAIR = re.compile(rf"(\w+)={_NUM}(\(all same\))?")
_MEMORY = re.compile(
    rf"(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): "
    rf"init={_NUM} overall={_NUM}"
)
_PEAK = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: {_NUM}")


class BenchmarkOutputError(ValueError):
    """benchmark_model output that lacks its summary, or a summary/statistics line that does not parse."""


@dataclass(frozen=True)
class RunStats:
    """One phase's statistics line, in microseconds. Fields the line does not print are None."""

    count: int
    curr_us: float | None
    first_us: float | None = None
    min_us: float | None = None
    max_us: float | None = None
    avg_us: float | None = None
    std_us: float | None = None
    p5_us: float | None = None
    median_us: float | None = None
    p95_us: float | None = None


@dataclass(frozen=True)
class BenchmarkModelResult:
    format: str  # current | inference | no_stats
    init_us: float | None  # None: this generation did not print it
    first_inference_us: float | None
    warmup_avg_us: float
    inference_avg_us: float
    warmup: RunStats | None  # the statistics line of the warm-up phase, when printed
    inference: RunStats | None  # ... of the timed phase
    init_mem_mb: float | None = None
    overall_mem_mb: float | None = None
    peak_mem_mb: float | None = None

    @property
    def inference_avg_ms(self) -> float:
        return self.inference_avg_us / 1000.0


def parse_stats_line(line: str) -> RunStats:
    """A "count=.. first=.. curr=.." line (any generation; log prefix allowed)."""
    m = _STATS_START.search(line)
    if not m:
        raise BenchmarkOutputError(f"not a benchmark_model statistics line: {line.strip()!r}")
    body = m.group(1)
    pairs = {key: float(value) for key, value, _ in _PAIR.findall(body)}
    leftover = _PAIR.sub("", body).strip()
    if "count" not in pairs or leftover:
        raise BenchmarkOutputError(f"cannot read benchmark_model statistics line: {line.strip()!r}")
    if pairs["count"] > 0 and "curr" not in pairs:
        raise BenchmarkOutputError(f"statistics line without curr=: {line.strip()!r}")
    allowed = {"count", "curr", "first", "min", "max", "avg", "std", "p5", "median", "p95"}
    if set(pairs) - allowed:
        raise BenchmarkOutputError(f"unknown fields {sorted(set(pairs) - allowed)} in {line.strip()!r}")
    if pairs["count"] >= 1 and "avg" not in pairs:  # "count=N curr=X" / "(all same)": every run took curr
        pairs.update(dict.fromkeys(("first", "min", "max", "avg"), pairs["curr"]), std=0.0)
    return RunStats(count=int(pairs["count"]), **{f"{k}_us": pairs.get(k) for k in sorted(allowed - {"count"})})


def parse_benchmark_model_output(text: str) -> BenchmarkModelResult:
    """The whole stdout/stderr (or logcat) of one benchmark_model run."""
    summary, stats, memory, peak = None, [], None, None
    last_error = None
    for line in text.splitlines():
        if "Timings (microseconds):" in line or "Memory (bytes):" in line:  # op-profiling tables, not phases
            continue
        if "timings in us" in line:
            for fmt, pattern in _SUMMARIES:
                m = pattern.search(line)
                if m:
                    summary = (fmt, m)
                    break
            else:
                raise BenchmarkOutputError(f"cannot read benchmark_model summary line: {line.strip()!r}")
        elif _STATS_START.search(line) and re.search(r"(?:^|\s)count=", line):
            stats.append(parse_stats_line(line))
        elif _MEMORY.search(line):
            m = _MEMORY.search(line)
            memory = (float(m.group(1)), float(m.group(2)))
        elif _PEAK.search(line):
            peak = float(_PEAK.search(line).group(1))
        elif re.search(r"\b(ERROR|Failed)\b", line):
            last_error = line.strip()
    if summary is None:
        hint = f"; last error: {last_error!r}" if last_error else ""
        raise BenchmarkOutputError(
            f"benchmark_model printed no 'inference timings in us' summary (it did not finish){hint}"
        )
    fmt, m = summary
    if fmt == "current":
        init, first, warm, inf = (float(g) for g in m.groups())
    else:
        warm, init, inf = (None if g is None else float(g) for g in m.groups())
        first = None
    return BenchmarkModelResult(
        format=fmt,
        init_us=init,
        first_inference_us=first,
        warmup_avg_us=warm,
        inference_avg_us=inf,
        warmup=stats[0] if len(stats) >= 2 else None,
        inference=stats[-1] if stats else None,
        init_mem_mb=memory[0] if memory else None,
        overall_mem_mb=memory[1] if memory else None,
        peak_mem_mb=peak,
    )
