"""Timing one latency-table cell on a device: the layer alone and as summed copies, in the target's format and
precision. One `CellTimer` per agent session: the single-device table (lut.py) and each device of a farm
(edgeprune/farm/worker.py) time cells the same way."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeprune.backends._registry import get_backend
from edgeprune.backends.base import Backend
from edgeprune.latency.microbench import LayerSignature, single_layer_model, single_layer_onnx
from edgeprune.latency.table import TableEntry
from edgeprune.models.base import LoadedModel
from edgeprune.types import Artifact, TargetProfile

LAYER_WARMUP, LAYER_RUNS = 5, 30
LAYER_PASSES = (
    2  # each layer timed twice, far apart in time; the faster median is kept (slow spells of shared machines)
)
# A cell is timed twice: the layer alone in a model, and CELL_COPIES copies of it (own weights) reading one input,
# summed; its entry is the cost of one more copy. A one-layer model pays the runtime's per-run costs (the call, the
# layout reorders, waking the thread pool) that a layer inside a model does not: on the 2-core host, ONNX Runtime,
# ResNet-56's cells timed alone took the same at 1 and 2 threads while the model ran 1.39x faster on 2, the table's
# calibration fell to 0.41 x sum, and the planner's picks came out 8-22 % optimistic (benchmarks/RESULTS.md).
CELL_COPIES = 4
CELLS = f"one copy more of {CELL_COPIES} summed copies vs the layer alone"
TIMING_CALIBRATION = 8  # random inputs an int8 cell or variant is calibrated on: it is timed, never scored


class CellTimer:
    """Times cells in `agent`'s session (an edgeprune.devices.agent_client.AgentSession) at the target's runtime,
    precision and `threads`; cell models are built under `scratch` by the runtime's backend bound to the target (a
    TensorRT cell's engine is built on the device)."""

    def __init__(self, agent, target: TargetProfile, threads: int, scratch: Path):
        self.agent, self.runtime, self.precision, self.threads = agent, target.runtime, target.precision, threads
        self.backend = get_backend(target.runtime).for_target(target)
        self.scratch = scratch

    def measure(self, signature: LayerSignature, cin: int, cout: int) -> TableEntry:
        alone, summed = (
            self.agent.bench(self._cell(signature, cin, cout, copies), self.runtime, threads=self.threads,
                             warmup=LAYER_WARMUP, runs=LAYER_RUNS).latency_stats()
            for copies in (1, CELL_COPIES)
        )  # fmt: skip
        per_copy = (summed.median_ms - alone.median_ms) / (CELL_COPIES - 1)
        per_copy_p90 = (summed.p90_ms - alone.median_ms) / (CELL_COPIES - 1)
        return TableEntry(signature, cin, cout, max(per_copy, 0.0), max(per_copy_p90, 0.0), summed.n, self.runtime,
                          self.threads, alone_ms=alone.median_ms)  # fmt: skip

    def _cell(self, signature: LayerSignature, cin: int, cout: int, copies: int) -> Path:
        """A cell's model (the layer alone, or `copies` summed copies of it) in the target's format and precision,
        built by that runtime's own export (and quantizer) as a shipped model is; ONNX fp32 is written directly (the
        same graph, without a PyTorch export)."""
        if written_directly(self.backend, self.precision):
            return single_layer_onnx(signature, cin, cout, self.scratch / f"layer{copies}.onnx", copies)
        folder = self.scratch / f"cell-{signature.key}-{cin}-{cout}-{copies}"  # kept for the repeat pass
        done = folder / "artifact.json"
        if done.is_file():
            return Artifact.load(done).path
        cell = single_layer_model(signature, cin, cout, copies)
        calibration = timing_calibration(self.backend, self.precision, cell)
        artifact = self.backend.export(cell, folder, self.precision, calibration=calibration)
        artifact.save(done)
        return artifact.path


def written_directly(backend: Backend, precision: str) -> bool:
    """ONNX fp32 cells are written as ONNX by microbench, not exported from PyTorch by the backend."""
    return backend.format == "onnx" and precision == "fp32"


def cell_method(backend: Backend, precision: str) -> str:
    if written_directly(backend, precision):
        return "written as ONNX directly"
    how = f"exported by the {backend.name} backend as a shipped model is"
    if precision in backend.calibrated:
        how += (
            f", {precision} calibrated on {TIMING_CALIBRATION} random inputs (timing only: the ranges change no kernel)"
        )
    return how


def timing_calibration(backend: Backend, precision: str, model: LoadedModel) -> np.ndarray | None:
    """Random inputs for the quantizer of a model that is only timed; None for a precision that takes none."""
    if precision not in backend.calibrated:
        return None
    shape = model.inputs[0].concrete_shape(TIMING_CALIBRATION)
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)
