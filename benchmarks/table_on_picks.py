"""The latency table judged on the planner's own picks and on random variants, all measured the way a build does.

Builds (or reuses) ResNet-56's table on the host, then measures 16 random variants (seed 7) and 7 planner picks
(`solve` on the calibrated table with the l1 values, aimed 7 % under speedups 1.3-3 as the build aims) each with the
build's interleaved comparison beside the unpruned model, and records predicted vs measured speedup per model in
OUT/records.json (benchmarks/RESULTS.md, "The latency table on the planner's own picks").

    python benchmarks/table_on_picks.py OUT THREADS
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

from edgeprune.backends._registry import get_backend
from edgeprune.devices.profiles import load_profile
from edgeprune.latency.compare import compare_latency
from edgeprune.latency.lut import _random_variants, build_lut
from edgeprune.latency.microbench import layer_uses
from edgeprune.models import LoadOptions, load_model
from edgeprune.plan.planner import LatencyCost, solve
from edgeprune.plan.structure import read_structure, realize
from edgeprune.progress import NoProgress

ASSETS = Path(__file__).resolve().parents[2] / "shared" / "assets"
SPEEDUPS = (1.3, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0)


class _Timing:
    runs, warmup, threads = 50, 10, None


def main() -> None:
    out, threads = Path(sys.argv[1]), int(sys.argv[2])
    model = load_model("cifar:resnet56",
                       LoadOptions(weights=str(ASSETS / "weights/cifar10_resnet/resnet56-4bfd9763.th")))  # fmt: skip
    target = load_profile("host")
    lut = build_lut(model, target, out / "lut", threads=threads, step=8, variants=0, calibration_variants=8,
                    runs=50, cache_dir=out / "cache")  # fmt: skip
    table = lut.table()
    cost = LatencyCost(table)
    structure = read_structure(model, "l1", 8)
    base_predicted = cost.total(structure.uses)
    models = {f"random{k}-b{blocks}": variant
              for k, (_, blocks, variant) in enumerate(_random_variants(model, 16, 8, seed=7))}  # fmt: skip
    for speedup in SPEEDUPS:
        choice = solve(structure, cost, base_predicted / speedup * 0.93)
        pruned = copy.deepcopy(model)
        realize(pruned, structure, choice.state(), "l1")
        models[f"pick{speedup}-b{len(choice.removed_blocks)}"] = pruned
    backend = get_backend("onnxruntime")
    unpruned = backend.export(model, out / "unpruned")
    timing = _Timing()
    timing.threads = threads
    records = []
    for name, variant in models.items():
        compared = compare_latency({"unpruned": unpruned, "candidate": backend.export(variant, out / name)}, target,
                                   timing, NoProgress(), 3)  # fmt: skip
        predicted = base_predicted / table.predict_ms(layer_uses(variant))
        measured = compared.speedup["candidate"]
        records.append({"name": name, "predicted_speedup": predicted, "measured_speedup": measured,
                        "speedup_se": compared.speedup_se["candidate"], "error": predicted / measured - 1})  # fmt: skip
        print(f"{name:16s} predicted {predicted:.3f} measured {measured:.3f} error {records[-1]['error']:+.3f}",
              flush=True)  # fmt: skip
    (out / "records.json").write_text(json.dumps({"calibration": lut.calibration.to_dict(), "records": records},
                                                 indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
