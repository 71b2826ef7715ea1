"""Detectors exported to OpenVINO and TFLite fp32 and verified on COCO128 on each runtime (issue 7's acceptance):
output parity with PyTorch within the backend's tolerance, and Yolo-Fastest-1.1's mAP50-95 on the runtime within
0.005 of PyTorch's. yolov8n.yaml has no trained weights here (random init), so only its parity means anything; its
mAP is printed for completeness. ONNX Runtime is the reference row.

Every row goes through `edgeprune verify` (the CLI, a fresh process each), so this measures what a user runs.

    python benchmarks/export_detectors.py --out benchmarks/results/export_detectors [--runtimes openvino,tflite]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[2] / "shared" / "assets"
DATA = ASSETS / "datasets" / "yaml" / "coco128.yaml"
MODELS = {
    "yolo-fastest-1.1": [
        "--model",
        str(ASSETS / "darknet/yolo-fastest/yolo-fastest-1.1.cfg"),
        "--weights",
        str(ASSETS / "darknet/yolo-fastest/yolo-fastest-1.1.weights"),
    ],
    "yolov8n.yaml": ["--model", "yolov8n.yaml"],
}
MAP_TOLERANCE = 0.005  # the acceptance's, for the trained detector


def verify(name: str, runtime: str, out: Path) -> dict:
    command = [sys.executable, "-m", "edgeprune.cli", "verify", *MODELS[name], "--data", str(DATA), "--runtime",
               runtime, "--threads", "2", "--out", str(out), "--json"]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode not in (0, 3):
        return {"model": name, "runtime": runtime, "error": proc.stderr.strip().splitlines()[-1:]}
    result = json.loads(proc.stdout)
    metrics = {m["name"]: m for m in result["metrics"]}
    row = {"model": name, "runtime": f"{runtime} {result['runtime_version']}", "passed": proc.returncode == 0,
           "n_images": result["n_samples"],
           "parity": [{k: p[k] for k in ("name", "max_abs", "max_abs_rel_range", "cosine_min", "passed")}
                      for p in result["parity"]]}  # fmt: skip
    for key in ("mAP50-95", "mAP50"):
        if key in metrics:
            row[key] = {"pytorch": metrics[key]["reference"], "runtime": metrics[key]["runtime"],
                        "delta": metrics[key]["runtime"] - metrics[key]["reference"]}  # fmt: skip
    if name == "yolo-fastest-1.1" and "mAP50-95" in row:
        row["map_within_0.005"] = abs(row["mAP50-95"]["delta"]) <= MAP_TOLERANCE
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/export_detectors"))
    parser.add_argument("--runtimes", default="onnxruntime,openvino,tflite")
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    rows = []
    for name in args.models.split(","):
        for runtime in args.runtimes.split(","):
            rows.append(verify(name, runtime, args.out / name / runtime))
            print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
