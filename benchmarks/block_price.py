"""What does a residual block of ResNet-56 cost inside the model, and what does the latency table say it costs?

Measured end to end: the unpruned model against the same with 4 plain blocks of one stage removed (layer{s}.1, .3,
.5, .7), each exported by the runtime's backend (int8: calibrated on 8 random inputs, as table cells are), timed in
15 interleaved rounds of 100 runs (order turned each round), 1 thread; a block's price = unpruned median x (1 -
median ratio) / 4. The table's price: its calibrated entries for that block's two convolutions (scale x cells +
2 x per-layer term), read from a build's lut.json.

    python benchmarks/block_price.py openvino int8 BUILD/lut.json SCRATCH_DIR
"""

import copy
import json
import sys
from pathlib import Path

import numpy as np

from edgeprune.backends._registry import get_backend
from edgeprune.devices.agent_client import AgentSession
from edgeprune.devices.transport import LocalTransport
from edgeprune.latency.compare import round_median, timed_rounds
from edgeprune.models import LoadOptions, load_model
from edgeprune.prune.depth import remove_blocks

runtime, precision, lut_path, out = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
ASSETS = Path(__file__).resolve().parents[2] / "shared" / "assets"
model = load_model("cifar:resnet56", LoadOptions(weights=str(ASSETS / "weights/cifar10_resnet/resnet56-4bfd9763.th")))
backend = get_backend(runtime)
models = {"unpruned": model}
for s in (1, 2, 3):
    v = copy.deepcopy(model)
    remove_blocks(v, names=[f"layer{s}.{i}" for i in (1, 3, 5, 7)])
    models[f"stage{s}-4"] = v
cal = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
paths = {}
for name, m in models.items():
    a = backend.export(m, out / name, precision, calibration=cal if precision in backend.calibrated else None)
    paths[name] = (a.path, runtime)
ratios = {n: [] for n in models}
with AgentSession(LocalTransport()) as agent:
    for _r, timed in zip(range(15), timed_rounds(agent, paths, threads=1, warmup=10, runs=100, turn=True)):
        base = round_median(timed["unpruned"])
        for n in models:
            ratios[n].append(round_median(timed[n]) / base)
        ratios.setdefault("_base", []).append(base)
base = float(np.median(ratios["_base"]))
lut = json.loads(Path(lut_path).read_text())
scale = lut["calibration"]["scale"]
per_layer = lut["calibration"].get("per_layer_ms", 0)
width = {1: (16, 32), 2: (32, 16), 3: (64, 8)}


def entry(c, h):
    for e in lut["entries"]:
        s = e["signature"]
        if (
            e["in_channels"] == c
            and e["out_channels"] == c
            and s["height"] == h
            and s["stride"] == [1, 1]
            and s["kernel"] == [3, 3]
        ):
            yield s["activation"], e["median_ms"], e["alone_ms"]


print("unpruned median", round(base, 4), "ms; calibration", lut["calibration"])
for s in (1, 2, 3):
    rel = float(np.median(ratios[f"stage{s}-4"]))
    measured = base * (1 - rel) / 4
    cells = list(entry(*width[s]))
    table = scale * sum(m for _, m, _ in cells) + 2 * per_layer
    print(
        f"stage {s}: measured block {measured * 1000:.1f} us; table {table * 1000:.1f} us; cells {[(a, round(m * 1000, 1), round(al * 1000, 1)) for a, m, al in cells]}"
    )
