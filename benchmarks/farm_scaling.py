"""`profile --lut` on a farm of 1, 2 and 3 loopback devices, and on one device without a farm.

Each device is a real OpenSSH server on 127.0.0.1 (the tests' sshd, tests/devices/conftest.py) reached with the
ssh transport; the farm runs on a real local Ray cluster that each command starts. The devices of a loopback farm
share this machine's cores (2 on the CI VM) and run 1 thread each: past 2 devices they slow each other down, which
is what the 3-device figure shows here and what a farm of separate boards does not have. Every run starts from an
empty table cache, so each times the whole table. Writes benchmarks/results/farm_scaling.json.

    python benchmarks/farm_scaling.py [--model cifar:resnet56] [--devices 1,2,3] [--out /tmp/farm-bench]
"""

from __future__ import annotations

import argparse
import getpass
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.devices.conftest import SshKeys, start_sshd, stop_sshd  # noqa: E402
from tests.farm.conftest import write_farm  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "farm_scaling.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cifar:resnet56")
    parser.add_argument("--devices", default="1,2,3")
    parser.add_argument("--variants", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("/tmp/farm-bench"))
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    keys = _keys(args.out / "keys")
    counts = [int(n) for n in args.devices.split(",")]
    servers = [start_sshd(keys, args.out / f"device{k}") for k in range(max(counts))]
    runs = []
    try:
        single = servers[0].profile(args.out / "single.yaml")
        runs.append(_run(args, "one device, no farm", ["--target", str(single), "--threads", "1"], 1))
        for n in counts:
            farm = write_farm(args.out / f"farm{n}.yaml", servers[:n], name=f"loopback{n}", max_spread=0.5)
            runs.append(_run(args, f"farm of {n}", ["--farm", str(farm)], n))
    finally:
        for server in servers:
            stop_sshd(server)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    record = {"date": time.strftime("%Y-%m-%d"), "commit": commit.stdout.strip(), "model": args.model,
              "command": "edgeprune profile --lut --runs 30 --step 8 --lut-calibration 0 "
                         f"--lut-variants {args.variants} (empty cache each run)", "runs": runs}  # fmt: skip
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


def _run(args, label: str, flags: list[str], devices: int) -> dict:
    out, cache = (
        args.out / label.replace(" ", "-").replace(",", ""),
        args.out / f"cache-{len(list(args.out.iterdir()))}",
    )
    command = [sys.executable, "-m", "edgeprune.cli", "profile", "--model", args.model, "--runs", "30", "--lut",
               "--step", "8", "--lut-calibration", "0", "--lut-variants", str(args.variants), "--cache", str(cache),
               "--out", str(out), "--json", *flags]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{label} failed: {done.stderr[-2000:]}")
    report = json.loads(done.stdout)
    stages = _stage_seconds(done.stderr)
    farm = report.get("farm") or {}
    row = {"label": label, "devices": devices, "wall_s": round(wall, 1), "cells": len(report["entries"]),
           "table_s": stages.get("latency table"), "variants_s": stages.get("end-to-end variants"),
           "mape_percent": report["mape_percent"]}  # fmt: skip
    if farm:
        row.update(cells_by_device=farm["cells_by_device"], ray_start_s=round(farm["ray_start_seconds"], 2),
                   job_s=farm["job_seconds"], device_s=farm["device_seconds"],
                   ray_share_of_jobs=round(farm["ray_share"], 4), reference_spread=round(farm["spread"], 4),
                   reference_ms={d["device"]: d["reference_ms"] for d in farm["devices"]})  # fmt: skip
    print(f"{label}: {wall:.0f} s, table {row['table_s']} s", flush=True)
    return row


def _stage_seconds(stderr: str) -> dict[str, float]:
    """'done in N s' of the progress lines, by task name (the latency table's and the variants')."""
    found = {}
    for line in stderr.splitlines():
        if ", done in " not in line:
            continue
        name = line.split("] ", 1)[1].split(":")[0]
        seconds = float(line.rsplit("done in ", 1)[1].split()[0])
        for key in ("latency table", "end-to-end variants"):
            if name.startswith(key):
                found[key] = seconds
    return found


def _keys(root: Path) -> SshKeys:
    root.mkdir(parents=True)
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(root / name)], check=True)
    (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
    return SshKeys(root=root, client_key=root / "client_key", host_key=root / "host_key", user=getpass.getuser())


if __name__ == "__main__":
    main()
