"""The README's quick start, run as a new user runs it: its build command, verbatim, in a fresh clone.

Takes command (1) from the README's quick start, drops the venv/pip part (the current interpreter's packages are
used; the clone's own code is imported), and runs the build in a fresh `git clone` of this repository with
../shared beside it and an empty cache (latency table, ultralytics settings), stderr redirected to a file as in a
CI log. Every stderr line is timestamped as it arrives, so the record says how long the build was silent at most.
Writes benchmarks/results/quickstart.json, which `benchmarks/readme_figures.py` turns into the README's figures.

    python benchmarks/quickstart.py
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "benchmarks" / "results" / "quickstart.json"


def readme_build_command(readme: str) -> list[str]:
    """The arguments of the `edgeprune build` in the quick start's command (1)."""
    section = readme.split("**(1)", 1)[1]
    block = re.search(r"```bash\n(.*?)\n```", section, re.S).group(1)
    build = block.split(".venv/bin/edgeprune ", 1)[1]
    return shlex.split(build)


def main() -> None:
    arguments = readme_build_command((ROOT / "README.md").read_text())
    commit = _git("rev-parse", "--short", "HEAD")
    with tempfile.TemporaryDirectory(prefix="edgeprune-quickstart-") as scratch:
        clone = Path(scratch) / "main"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        os.symlink(ROOT.parent / "shared", Path(scratch) / "shared")
        cache = Path(scratch) / "cache"
        env = {**os.environ, "PYTHONPATH": str(clone), "XDG_CACHE_HOME": str(cache),
               "EDGEPRUNE_CACHE": str(cache / "edgeprune")}  # fmt: skip
        lines: list[tuple[float, str]] = []
        started = time.monotonic()
        build = subprocess.Popen([sys.executable, "-m", "edgeprune.cli", *arguments], cwd=clone, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        reader = threading.Thread(target=_timestamp, args=(build.stderr, started, lines), daemon=True)
        reader.start()
        stdout = build.stdout.read()
        code = build.wait()
        reader.join()
        wall = time.monotonic() - started
        out = clone / arguments[arguments.index("--out") + 1]
        report = json.loads((out / "report.json").read_text())
        manifest = json.loads((out / "bundle" / "manifest.json").read_text())
        kept = ROOT / "edgeprune-runs" / "quickstart"  # the report.html the screenshot is taken of
        shutil.rmtree(kept, ignore_errors=True)
        shutil.copytree(out, kept, symlinks=True)
    times = [t for t, _ in lines]
    gaps = [b - a for a, b in zip([0.0, *times], [*times, wall])]
    shipped = next(r for r in report["results"] if r["name"] == report["shipped"])
    unpruned = next(r for r in report["results"] if r["name"] == "unpruned")
    record = {
        "date": time.strftime("%Y-%m-%d"),
        "commit": commit,
        "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
        "command": "edgeprune " + shlex.join(arguments),
        "fresh_clone_empty_cache": True,
        "exit_code": code,
        "wall_s": round(wall, 1),
        "stage_seconds": report["stage_seconds"],
        "summary": stdout.strip().splitlines()[:1],
        "shipped": report["shipped"],
        "speedup": report["speedup"],
        "speedup_relative_se": shipped["speedup_se"],
        "unpruned_median_ms": unpruned["latency"]["median_ms"],
        "shipped_median_ms": shipped["latency"]["median_ms"],
        "latency_method": report["latency_method"],
        "blocks_removed": len(manifest["prune_plan"]["removed_blocks"]),
        "macs": [unpruned["macs"], shipped["macs"]],
        "held_out_top1": [unpruned["metric_value"], shipped["metric_value"]],
        "held_out_n": _held_out_n(kept),
        "epochs_run": _epochs(report),
        "latency_met": report["latency_met"],
        "accuracy_met": report["accuracy_met"],
        "stderr_lines": len(lines),
        "stderr_longest_silence_s": round(max(gaps), 1),
        "stderr_head": [text for _, text in lines[:12]],
    }
    RECORD.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "stderr_head"}, indent=2, ensure_ascii=False))


def _timestamp(stream, started: float, lines: list) -> None:
    for line in stream:
        lines.append((time.monotonic() - started, line.rstrip("\n")))


def _held_out_n(out: Path) -> int | None:
    holdout = out / "data" / "holdout"
    return sum(1 for path in holdout.rglob("*") if not path.is_dir()) if holdout.is_dir() else None


def _epochs(report: dict) -> int | None:
    recovery = report.get("recovery") or {}
    shipped = next((c for c in recovery.get("candidates", []) if c["name"] == report["shipped"]), None)
    return shipped["epochs_run"] if shipped else None


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT).stdout.strip()


if __name__ == "__main__":
    main()
