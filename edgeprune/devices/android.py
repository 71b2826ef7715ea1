"""Android targets: a .tflite timed ON the phone by TFLite's `benchmark_model` binary through adb (a phone has no
Python for the agent).

The binary is the user's (targets/android/README.md says where to get it): the connection's `benchmark_model`
(profile, or EDGEPRUNE_BENCHMARK_MODEL) is a path on the phone, or a host file that is pushed to
/data/local/tmp/edgeprune/; None means /data/local/tmp/benchmark_model, where targets/android/setup.sh puts it.
The model goes to /data/local/tmp/edgeprune/ and runs as

    benchmark_model --graph=G --num_threads=N --warmup_runs=W --num_runs=R --min_secs=0 --warmup_min_secs=0
                    [--use_xnnpack=true|false]

(`--min_secs=0`/`--warmup_min_secs=0`: exactly W and R runs; by default the tool keeps running for 1 s / 0.5 s.
Builds that predate a flag warn "Unconsumed cmdline flags" and carry on.) benchmark_model prints aggregates, not
per-run times: count, mean, std, min, max, and p5/median/p95 in builds since 2023, so the LatencyStats it gives has
no p90/p99, no median from older builds, and its method says so.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edgeprune.devices.adb import AdbTransport
from edgeprune.devices.benchmark_model import BenchmarkModelResult, BenchmarkOutputError, parse_benchmark_model_output
from edgeprune.devices.energy import EnergyFigure, energy_for
from edgeprune.errors import ConfigError, DeviceError
from edgeprune.types import DeviceInfo, LatencyStats, TargetProfile

DEFAULT_BENCHMARK_MODEL = "/data/local/tmp/benchmark_model"  # where targets/android/setup.sh pushes it
PHASE_LIMIT_S = 150  # benchmark_model's default --max_secs, per phase (warm-up, timed runs)
_FACTS = 'getprop; echo "@@edgeprune@@"; cat /sys/devices/system/cpu/possible; echo "@@edgeprune@@"; sha256sum "$1"'


@dataclasses.dataclass(frozen=True)
class AndroidRun:
    """One benchmark_model run on a phone: what ran, what it printed, and what that parsed to."""

    serial: str
    binary: str  # device path
    graph: str  # device path of the model
    argv: tuple[str, ...]
    threads: int
    warmup: int
    runs: int
    result: BenchmarkModelResult
    output: str


def benchmark_command(
    binary: str, graph: str, *, threads: int, warmup: int, runs: int, xnnpack: bool | None = True
) -> list[str]:
    """The benchmark_model argv (each word is quoted for the device shell by AdbTransport.shell). xnnpack None: the
    binary's default delegate choice."""
    if threads < 1 or warmup < 0 or runs < 1:
        raise ConfigError(
            f"benchmark_model needs threads >= 1, warmup >= 0 and runs >= 1 (got {threads}, {warmup}, {runs})"
        )
    argv = [
        binary,
        f"--graph={graph}",
        f"--num_threads={threads}",
        f"--warmup_runs={warmup}",
        f"--num_runs={runs}",
        "--min_secs=0",
        "--warmup_min_secs=0",
    ]
    if xnnpack is not None:
        argv.append(f"--use_xnnpack={'true' if xnnpack else 'false'}")
    return argv


def latency_from_run(run: AndroidRun, *, runtime_version: str, batch: int = 1) -> LatencyStats:
    """LatencyStats (energy not yet known) from benchmark_model's statistics line of the timed runs (microseconds)."""
    stats = run.result.inference
    if stats is None or stats.count < 1 or stats.avg_us is None:
        raise DeviceError(
            f"benchmark_model on {run.serial} printed no statistics line for its timed runs",
            fix="run it by hand (`adb shell` + the command in the profile result) and check its output",
        )
    ms = lambda us: None if us is None else us / 1000.0
    have = "count, mean, std, min, max" + (", median" if stats.median_us is not None else "")
    method = (
        f"measured: benchmark_model on {run.serial}, its timing of each invoke; per-run samples are not "
        f"available (the tool reports {have}), so p90/p99 are not reported"
    )
    if stats.count != run.runs:
        method += f"; {stats.count} of {run.runs} runs finished within benchmark_model's {PHASE_LIMIT_S} s limit"
    return LatencyStats.from_summary(
        n=stats.count,
        mean_ms=ms(stats.avg_us),
        std_ms=ms(stats.std_us or 0.0),
        min_ms=ms(stats.min_us),
        max_ms=ms(stats.max_us),
        median_ms=ms(stats.median_us),
        warmup=run.warmup,
        runtime="tflite",
        runtime_version=runtime_version,
        threads=run.threads,
        batch=batch,
        method=method,
    )


def energy_for_run(target: TargetProfile, stats: LatencyStats) -> EnergyFigure:
    """Energy for a benchmark_model run: a target's sensor is not sampled during it (yet), and an estimate needs the
    median latency, which older benchmark_model builds do not print."""
    if target.power.sensor:
        return EnergyFigure(
            "unavailable", None, None, f"{target.power.sensor} is not sampled while benchmark_model runs over adb"
        )
    if target.power.estimate_w is not None and stats.median_ms is None:
        return EnergyFigure(
            "unavailable", None, None, "this benchmark_model build prints no median latency to estimate energy from"
        )
    return energy_for(target, stats.median_ms, stats.batch)  # estimated from the median, or unavailable


def parse_getprop(text: str) -> dict[str, str]:
    """`getprop` output ("[key]: [value]" per line) as a dict."""
    props = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and "]: [" in line and line.endswith("]"):
            key, _, value = line[1:-1].partition("]: [")
            props[key] = value
    return props


def cpu_count_from_possible(text: str) -> int | None:
    """The number of CPUs in a kernel CPU list ("0-7", "0-3,6"), None when it does not parse."""
    count = 0
    try:
        for part in text.strip().split(","):
            low, _, high = part.partition("-")
            count += int(high or low) - int(low) + 1
    except ValueError:
        return None
    return count or None


def device_info(
    target: str, serial: str, props: dict[str, str], cpu_count: int | None, runtime_version: str
) -> DeviceInfo:
    release, sdk = props.get("ro.build.version.release", "?"), props.get("ro.build.version.sdk", "?")
    cpu = next((props[k] for k in ("ro.soc.model", "ro.board.platform", "ro.hardware") if props.get(k)), "unknown")
    return DeviceInfo(
        target=target,
        hostname=props.get("ro.product.model") or serial,
        os=f"Android {release} (SDK {sdk})",
        arch=props.get("ro.product.cpu.abi", "unknown"),
        cpu=cpu,
        cpu_count=cpu_count or 0,
        python="none (benchmark_model)",
        runtime="tflite",
        runtime_version=runtime_version,
    )


def resolve_benchmark_model(transport: AdbTransport, value: str | None) -> str:
    """The device path of benchmark_model: `value` as a device path, or a host file pushed now; None: the default
    path. Checked to be executable on the device."""
    if value is not None and Path(value).expanduser().is_file():
        remote = transport.put(Path(value).expanduser())  # DEVICE_DIR/<name>
        transport.check_shell(["chmod", "755", remote], what="making benchmark_model executable")
        return remote
    path = value or DEFAULT_BENCHMARK_MODEL
    if not path.startswith("/"):
        raise ConfigError(
            f"benchmark_model {path!r} is neither a file on this machine nor an absolute path on the device",
            fix="set connection.benchmark_model or EDGEPRUNE_BENCHMARK_MODEL to one",
        )
    code, _, _ = transport.shell(["test", "-x", path])
    if code != 0:
        raise DeviceError(
            f"no executable benchmark_model at {path} on {transport.label}",
            fix="get TFLite's prebuilt benchmark_model for the phone's ABI (targets/android/README.md) and run "
            "`bash targets/android/setup.sh path/to/benchmark_model`, or set EDGEPRUNE_BENCHMARK_MODEL to a "
            "host file or a device path",
        )
    return path


def profile_android(
    model: Path,
    target: TargetProfile,
    *,
    runs: int,
    warmup: int,
    threads: int | None = None,
    xnnpack: bool | None = True,
    batch: int = 1,
    transport: AdbTransport | None = None,
) -> tuple[DeviceInfo, LatencyStats, AndroidRun]:
    """Push `model` (a .tflite) and time it with benchmark_model on the target's phone. `threads` None: every core
    the phone has."""
    model = Path(model)
    if model.suffix != ".tflite":
        raise ConfigError(
            f"{model} is not a .tflite: Android targets time TFLite models with benchmark_model",
            expected="a .tflite artifact (the target's runtime is tflite)",
        )
    if target.connection.kind != "adb":
        raise ConfigError(f"target {target.name} does not connect over adb")
    transport = transport or AdbTransport(target.connection.serial)
    serial = transport.serial()
    binary = resolve_benchmark_model(transport, target.connection.benchmark_model)
    props, cpu_count, binary_sha = _facts(transport, binary)
    version = f"benchmark_model sha256:{binary_sha[:12]}" if binary_sha else "benchmark_model (version not reported)"
    graph = transport.put(model)
    used_threads = threads or cpu_count or 1
    argv = benchmark_command(binary, graph, threads=used_threads, warmup=warmup, runs=runs, xnnpack=xnnpack)
    code, out, err = transport.shell(argv, timeout_s=transport.timeout_s + 2 * PHASE_LIMIT_S)
    text = f"{out}\n{err}"
    try:
        result = parse_benchmark_model_output(text)
    except BenchmarkOutputError as exc:
        raise DeviceError(
            f"benchmark_model on {serial} failed (code {code}): {exc}",
            fix=f"run it by hand: {transport.pasteable(argv)}",
        ) from None
    run = AndroidRun(
        serial=serial,
        binary=binary,
        graph=graph,
        argv=tuple(argv),
        threads=used_threads,
        warmup=warmup,
        runs=runs,
        result=result,
        output=text,
    )
    latency = latency_from_run(run, runtime_version=version, batch=batch)
    latency = dataclasses.replace(latency, **_energy_fields(energy_for_run(target, latency)))
    return device_info(target.name, serial, props, cpu_count, version), latency, run


def _facts(transport: AdbTransport, binary: str) -> tuple[dict[str, str], int | None, str | None]:
    """(getprop, CPU count, sha256 of the binary) in one adb call; missing parts are empty/None."""
    _, out, _ = transport.shell(["sh", "-c", _FACTS, "sh", binary])
    parts = out.split("@@edgeprune@@")
    props = parse_getprop(parts[0])
    cpus = cpu_count_from_possible(parts[1]) if len(parts) > 1 else None
    sha = parts[2].split()[0] if len(parts) > 2 and parts[2].split() else None
    return props, cpus, sha if sha and len(sha) == 64 else None


def _energy_fields(energy: EnergyFigure) -> dict:
    return {
        "energy": energy.energy,
        "energy_mj": energy.energy_mj,
        "power_w": energy.power_w,
        "energy_note": energy.note,
        "energy_detail": energy.detail,
    }
