"""TensorRT: an engine is specific to the GPU and TensorRT version that build it, so it is built ON the target.

The model goes to ONNX here (the ONNX Runtime backend's exporter), then the agent on the device builds the engine
with the device's TensorRT (targets/agent_trt_*.py: TRT 8.x and 10.x APIs, fp16, int8 calibrated on the user's
images, per-layer fp32 for mixed precision, sparse weights allowed for a model pruned to 2:4) and the engine comes
back to sit beside its artifact.json and engine.json (TensorRT version, device, per-layer precisions, calibration,
whether sparse weights were allowed). Without a target the local agent builds,
which works where `tensorrt` imports with a GPU. This machine has neither: the tests drive the whole path through a
stand-in of TensorRT's documented builder API (tests/standins/) and skip the real build.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from edgeprune.backends._quantization import onnx_nodes_of_layers
from edgeprune.backends.base import Backend, recorded_artifact
from edgeprune.errors import ConfigError
from edgeprune.fileio import write_text, writing
from edgeprune.models.base import LoadedModel
from edgeprune.types import Artifact, TargetProfile
from edgeprune.verify.parity import Tolerances, int8_tolerances

# Not measured here (no GPU on the dev machine); each bound follows from how TensorRT computes:
# - fp32: TensorRT enables TF32 Tensor Cores for fp32 layers by default on Ampere and newer (Orin) — TensorRT
#   Developer Guide, "Reduced Precision" / BuilderFlag.TF32 — a 10-bit mantissa like fp16's, so fp32 engines there
#   get fp16-like bounds.
# - fp16: half-precision weights and activations (rounding 2^-11 relative each), accumulated in fp16 or fp32 by the
#   chosen tactic; the same bounds as the fp16 exports measured on OpenVINO/TFLite here, with the metric at 0.5 pt.
# - int8: judged by the task metric, within 1.0 pt (issue 7's acceptance); parity only catches a broken engine.
_TOLERANCES = {
    "fp32": Tolerances(
        max_abs=1e-2,
        max_abs_rel_range=2e-2,
        cosine=0.999,
        metric=0.005,
        why="fp32 engine, TF32 on Ampere+ GPUs by TensorRT's default (10-bit mantissa)",
    ),
    "fp16": Tolerances(
        max_abs=1e-2,
        max_abs_rel_range=2e-2,
        cosine=0.999,
        metric=0.005,
        why="fp16 weights and activations (rounding 2^-11 relative)",
    ),
    "int8": int8_tolerances(
        "int8 (entropy calibration on the user's images): judged by the task metric, within 1.0 pt"
    ),
}
ENGINE_FILE = "model.engine"
ENGINE_INFO = "engine.json"


class TensorrtBackend(Backend):
    name = "tensorrt"
    default_precision = "fp16"  # every Jetson profile's
    calibrated = ("int8",)
    tolerances_by_precision = _TOLERANCES

    builds_on_device = True

    def __init__(self, target: TargetProfile | None = None):
        self.target = target

    def for_target(self, target: TargetProfile | None) -> TensorrtBackend:
        return TensorrtBackend(target)

    def _export(self, model: LoadedModel, out_dir: Path, precision: str) -> Artifact:
        return self._build(model, out_dir, precision, None, ())

    def _export_calibrated(self, model: LoadedModel, out_dir: Path, precision: str, calibration: np.ndarray,
                           float_layers: tuple[str, ...]) -> Artifact:  # fmt: skip
        return self._build(model, out_dir, precision, calibration, float_layers)

    def _describe(self, path: Path, model: LoadedModel) -> Artifact:
        recorded = recorded_artifact(path)
        if recorded is None:
            raise ConfigError(f"{path}: only TensorRT on the device that built an engine can read its inputs, and "
                              "no artifact.json beside it describes this file",
                              fix="pass an engine exported by `edgeprune export --format tensorrt` with its "
                                  "artifact.json, or let edgeprune export one")  # fmt: skip
        return recorded

    def _build(self, model: LoadedModel, out_dir: Path, precision: str, calibration: np.ndarray | None,
               float_layers: tuple[str, ...]) -> Artifact:  # fmt: skip
        from edgeprune.backends.onnxruntime import OnnxRuntimeBackend
        from edgeprune.devices.agent_client import AgentSession
        from edgeprune.devices.transport import LocalTransport, transport_for

        transport = transport_for(self.target) if self.target is not None else LocalTransport()  # checked first
        onnx = OnnxRuntimeBackend().export(model, out_dir / "onnx", "fp32")
        float_nodes = list(onnx_nodes_of_layers(onnx.path, float_layers, "TensorRT").values())
        with tempfile.TemporaryDirectory(prefix="edgeprune-trt-") as scratch, AgentSession(transport) as agent:
            samples = None
            if calibration is not None:
                samples = Path(scratch) / "calibration.npy"
                np.save(samples, np.ascontiguousarray(calibration, dtype=np.float32))
            device = agent.info(self.target.name if self.target else "local", self.name)
            built = agent.build_engine(onnx.path, precision=precision, calibration=samples, float_layers=float_nodes,
                                       sparse_weights=model.sparsity is not None)  # fmt: skip
            engine = out_dir / ENGINE_FILE  # moved: a local build wrote it beside the ONNX, a remote one to scratch
            _move(agent.transport.fetch(built.engine, Path(scratch)), engine)
            if built.calibration:
                cache = agent.transport.fetch(built.calibration["cache"], Path(scratch))
                _move(cache, out_dir / "calibration.cache")
        where = f"{agent.transport.label} ({device.hostname})"
        info = {"device": where, "target": self.target.name if self.target else None, **dataclasses.asdict(built),
                "float_layers": dict(zip(float_layers, float_nodes))}  # fmt: skip
        write_text(out_dir / ENGINE_INFO, json.dumps(info, indent=2, default=str) + "\n")
        return self._artifact(
            model, [engine], precision=precision, inputs=onnx.inputs, outputs=onnx.outputs,
            exporter=f"TensorRT {built.tensorrt_version} builder on {where}, from {onnx.exporter}",
            opset=onnx.opset, tool_versions={**onnx.tool_versions, "tensorrt": built.tensorrt_version},
            calibration_images=None if calibration is None else len(calibration), float_layers=tuple(float_layers),
        )  # fmt: skip


def _move(source: Path, path: Path) -> None:
    """Move a built file into place whole (from scratch, possibly on another disk)."""
    with writing(path, needs=source.stat().st_size) as tmp:
        shutil.move(source, tmp)
