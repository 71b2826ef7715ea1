"""LUT prediction accuracy on the host (ONNX Runtime, 2 threads): ResNet-56 and ultralytics yolov3-tiny.

For each model: build (or reuse) the per-layer latency table, calibrate it on the unpruned model and 8 random
prunings, then predict and measure 10 more random prunings end to end (50 runs each). Prints each variant's
predicted vs measured median and the MAPE; the issue's goal is MAPE <= 10 %.

    python benchmarks/lut_accuracy.py [--models cifar:resnet56,yolov3-tiny.yaml] [--out /tmp/lut-bench]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from edgeprune.devices.profiles import load_profile
from edgeprune.latency.lut import build_lut
from edgeprune.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cifar:resnet56,yolov3-tiny.yaml")
    parser.add_argument("--variants", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/lut-bench"))
    args = parser.parse_args()
    summary = {}
    for spec in args.models.split(","):
        started = time.monotonic()
        report = build_lut(load_model(spec), load_profile("host"), args.out / spec.replace(":", "_"),
                           threads=args.threads, variants=args.variants, cache_dir=args.out / "cache")  # fmt: skip
        seconds = time.monotonic() - started
        print(f"\n{spec}: {report.summary()} ({seconds:.0f} s)")
        for v in report.variants:
            print(
                f"  {v.name:24s} {v.role:11s} predicted {v.predicted_ms:8.3f} ms  measured {v.measured.median_ms:8.3f}"
                f" ms (p90 {v.measured.p90_ms:8.3f}, CV {v.measured.cv:5.1%})  error {v.error:+6.1%}"
            )
        summary[spec] = {"mape_percent": report.mape_percent, "entries": len(report.entries),
                         "calibration": report.calibration.to_dict(), "seconds": round(seconds)}  # fmt: skip
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
