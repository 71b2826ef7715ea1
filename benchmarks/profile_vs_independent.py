"""Does `edgeprune profile` agree with an independent ONNX Runtime timing of the same file at the same threads?

The independent timing is a plain InferenceSession (only intra_op_num_threads set) timed with time.perf_counter
in this process, nothing shared with edgeprune's agent. The two are interleaved `--rounds` times so machine
noise hits both alike; the ratio of medians is printed per round and overall.

    python benchmarks/profile_vs_independent.py --model torchvision:resnet18 --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _timing import median_ms, ort_session


def independent_median_ms(model_path: Path, threads: int, runs: int, warmup: int) -> float:
    return median_ms(*ort_session(model_path, threads, warmup), runs)


def edgeprune_profile(model: str, artifact: Path, threads: int, runs: int, out: Path) -> dict:
    command = [
        sys.executable,
        "-m",
        "edgeprune.cli",
        "profile",
        "--model",
        model,
        "--artifact",
        str(artifact),
        "--threads",
        str(threads),
        "--runs",
        str(runs),
        "--out",
        str(out),
        "--json",
    ]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)["latency"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--model", default="torchvision:resnet18")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgeprune-bench-"))
    subprocess.run(
        [sys.executable, "-m", "edgeprune.cli", "export", "--model", args.model, "--out", str(work)],
        check=True,
        capture_output=True,
    )
    artifact = work / "model.onnx"
    ratios = []
    for round_ in range(args.rounds):
        ours = edgeprune_profile(args.model, artifact, args.threads, args.runs, work / f"profile{round_}")
        theirs = independent_median_ms(artifact, args.threads, args.runs, warmup=10)
        ratios.append(ours["median_ms"] / theirs)
        print(
            f"round {round_}: edgeprune median {ours['median_ms']:.2f} ms (p90 {ours['p90_ms']:.2f}, n={ours['n']}, "
            f"{ours['runtime']} {ours['runtime_version']}, {ours['threads']} threads) | independent ORT median "
            f"{theirs:.2f} ms | ratio {ratios[-1]:.3f}"
        )
    print(
        f"{args.model}: median ratio edgeprune/independent = {statistics.median(ratios):.3f} "
        f"over {args.rounds} rounds (goal: within 0.85..1.15)"
    )


if __name__ == "__main__":
    main()
