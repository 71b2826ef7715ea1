"""TFLite export (.tflite): fp32 by litert-torch, fp16 and int8 by ai-edge-quantizer on that fp32 model, for the
TFLite interpreter on the device (targets/agent_runtimes.TfliteSession: LiteRT with XNNPACK).

- fp32: `litert_torch.convert(module, example)`. The layout stays NCHW (the model's own); litert-torch inserts the
  transposes. The batch is fixed at 1: litert-torch 0.10 cannot lower a symbolic batch through `flatten`/`view`
  (jax_bridge "Shapes must be 1D sequences of concrete values"), and a fixed-batch model resized to another batch
  computes wrong numbers (ResNet-20: 1.4 max-abs at batch 5) because its Reshape targets are constants. The agent
  runs fixed-batch models sample by sample, so verification still sends whole batches.
- fp16: ai-edge-quantizer `float_casting` — convolution / fully connected weights stored as fp16 and dequantized by
  the interpreter to fp32 compute (TFLite's "float16 quantization").
- int8: ai-edge-quantizer `static_wi8_ai8` (int8 weights symmetric per channel, int8 activations asymmetric per
  tensor, int8 model input/output, which the agent converts from/to float32), calibrated one image at a time on the
  user's images. Layers named in `float_layers` get the `no_quantize` algorithm (selective quantization), found by
  the module path litert-torch writes into tensor names (`.../Sequential_layer3/BasicBlock_2/Conv2d_conv2;`).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np

from edgeprune.backends.base import Backend, recorded_artifact
from edgeprune.errors import ConfigError, ExportError, MissingDependency
from edgeprune.fileio import check_room, staged
from edgeprune.models.base import LoadedModel
from edgeprune.types import Artifact, TensorSpec
from edgeprune.verify.parity import Tolerances, int8_tolerances

# Tolerances by precision against PyTorch fp32. Checked on tiny models (tests/backends/) and on the 2000 held-out
# images of benchmarks/export_accuracy.py (ResNet-56 unpruned and pruned, CIFAR-10 JPEGs; benchmarks/RESULTS.md):
# - fp32: XNNPACK's fp32 kernels, ~2e-5 max-abs on ResNet-56 logits; top-1 identical.
# - fp16: fp16 weights, fp32 compute; ~1e-2 of the logit range on a random ResNet-20.
# - int8: judged by the task metric within 1.0 pt (the acceptance); parity only catches a broken model
#   (mean per-sample cosine ≥ 0.95; seen 0.9959-0.9960 while the worst of 2000 samples was 0.93-0.95).
_TOLERANCES = {
    "fp32": Tolerances(
        max_abs=1e-4,
        max_abs_rel_range=1e-4,
        cosine=0.9999,
        metric=0.003,
        why="fp32 XNNPACK kernels: summation order differs (~1e-5 seen)",
    ),
    "fp16": Tolerances(
        max_abs=1e-2,
        max_abs_rel_range=2e-2,
        cosine=0.999,
        metric=0.005,
        why="fp16 weights (rounding 2^-11 relative), fp32 compute",
    ),
    "int8": int8_tolerances(
        "int8 weights and activations (ai-edge-quantizer): judged by the task metric, within 1.0 pt"
    ),
}
_SIGNATURE = "serving_default"  # litert-torch's default signature name


def _import(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependency(
            module.split(".")[0].replace("_", "-"), extra="tflite", purpose="TFLite export"
        ) from None


class TfliteBackend(Backend):
    name = "tflite"
    tolerances_by_precision = _TOLERANCES
    calibrated = ("int8",)

    def _export(self, model: LoadedModel, out_dir: Path, precision: str) -> Artifact:
        path = out_dir / "model.tflite"
        if precision == "fp32":
            check_room(out_dir, _fp32_bytes(model))
            with staged(out_dir, last=path.name) as staging:
                converter = self._convert(model, staging / path.name)
            return self._artifact_for(path, model, exporter=converter, precision=precision)
        qtyping = _import("ai_edge_quantizer.qtyping")
        with self._float_model(model) as (float_path, converter):
            quantizer = self._quantizer(float_path)
            quantizer.update_quantization_recipe(
                regex=".*",
                operation_name="*",
                algorithm_key="float_casting",
                op_config=qtyping.OpQuantizationConfig(
                    weight_tensor_config=qtyping.TensorQuantizationConfig(
                        num_bits=16, dtype=qtyping.TensorDataType.FLOAT
                    ),
                    compute_precision=qtyping.ComputePrecision.FLOAT,
                    explicit_dequantize=True,
                ),
            )
            self._write(quantizer, None, path, model)
        return self._artifact_for(
            path,
            model,
            exporter=f"{converter}; ai-edge-quantizer {_version('ai-edge-quantizer')} float_casting (fp16 weights)",
            precision=precision,
        )

    def _export_calibrated(
        self, model: LoadedModel, out_dir: Path, precision: str, calibration: np.ndarray, float_layers: tuple[str, ...]
    ) -> Artifact:
        recipe = _import("ai_edge_quantizer.recipe")
        path = out_dir / "model.tflite"
        with self._float_model(model) as (float_path, converter):
            quantizer = self._quantizer(float_path)
            quantizer.load_quantization_recipe(recipe.static_wi8_ai8())
            for regex in _float_regexes(float_path, float_layers):
                quantizer.update_quantization_recipe(regex=regex, operation_name="*", algorithm_key="no_quantize")
            input_name = _signature_input(float_path)
            samples = [{input_name: calibration[i : i + 1]} for i in range(len(calibration))]
            try:
                with _quiet():
                    qsvs = quantizer.calibrate({_SIGNATURE: samples}, num_threads=min(4, os.cpu_count() or 1))
            except Exception as exc:  # the calibrator raises ValueError/RuntimeError from the interpreter
                raise ExportError(f"ai-edge-quantizer could not calibrate {model.spec}: {_first_line(exc)}") from exc
            self._write(quantizer, qsvs, path, model)
        exporter = f"{converter}; ai-edge-quantizer {_version('ai-edge-quantizer')} static_wi8_ai8" + (
            f"; float: {', '.join(float_layers)}" if float_layers else ""
        )
        return self._artifact_for(
            path,
            model,
            exporter=exporter,
            precision=precision,
            calibration_images=len(samples),
            float_layers=float_layers,
        )

    @contextlib.contextmanager
    def _float_model(self, model: LoadedModel):
        with tempfile.TemporaryDirectory(prefix="edgeprune-tflite-") as tmp:
            check_room(tmp, _fp32_bytes(model))
            path = Path(tmp) / "float.tflite"
            yield path, self._convert(model, path)

    @staticmethod
    def _convert(model: LoadedModel, path: Path) -> str:
        litert_torch = _import("litert_torch")
        example = model.example_inputs(1)
        try:
            with _quiet():
                litert_torch.convert(model.module.eval(), example).export(str(path))
        except Exception as exc:  # torch.export and the lowering raise many types
            raise ExportError(
                f"litert-torch could not convert {model.spec}: {_first_line(exc)}",
                fix="make the model traceable by torch.export (no data-dependent control flow)",
            ) from exc
        return f"litert-torch {litert_torch.__version__} (batch 1)"

    @staticmethod
    def _quantizer(float_path: Path):
        quantizer_module = _import("ai_edge_quantizer.quantizer")
        return quantizer_module.Quantizer(str(float_path))

    @staticmethod
    def _write(quantizer, qsvs, path: Path, model: LoadedModel) -> None:
        try:
            with _quiet():
                result = quantizer.quantize(qsvs, enable_progress_report=False)
        except Exception as exc:
            raise ExportError(f"ai-edge-quantizer could not quantize {model.spec}: {_first_line(exc)}") from exc
        with staged(path.parent, last=path.name) as staging:
            result.export_model(str(staging / path.name))

    def _describe(self, path: Path, model: LoadedModel) -> Artifact:
        recorded = recorded_artifact(path)
        if recorded is not None:
            return recorded
        return self._artifact_for(path, model, exporter="unknown (file given with --artifact)", precision=None)

    def _artifact_for(
        self,
        path: Path,
        model: LoadedModel,
        *,
        exporter: str,
        precision: str | None,
        calibration_images: int | None = None,
        float_layers: tuple[str, ...] = (),
    ) -> Artifact:
        interpreter = _interpreter(path)
        return self._artifact(
            model, [path],
            precision=precision or _precision_of(interpreter),
            inputs=tuple(_spec(d) for d in interpreter.get_input_details()),
            outputs=tuple(_spec(d) for d in interpreter.get_output_details()),
            exporter=exporter, opset=None, tool_versions=_tool_versions(),
            calibration_images=calibration_images, float_layers=tuple(float_layers),
        )  # fmt: skip


def _fp32_bytes(model: LoadedModel) -> int:
    """What the fp32 flatbuffer takes at least. Checked before converting: LLVM, which writes it, aborts the whole
    process on a full disk instead of raising."""
    return 4 * sum(p.numel() for p in model.module.parameters())


def layer_regex(layer: str) -> str:
    """A regex for the tensor names of a PyTorch layer in a litert-torch model: every module on its path appears
    as `<class>_<attribute>`, joined by '/', and a location ends with ';'."""
    return r"(?:^|;)[^/;]+" + "".join(r"/[^/;]*_" + re.escape(part) for part in layer.split(".")) + ";"


def _interpreter(path: Path):
    interpreter_module = _import("ai_edge_litert.interpreter")
    try:
        return interpreter_module.Interpreter(model_path=str(path))
    except (ValueError, RuntimeError) as exc:
        raise ConfigError(f"{path} is not a readable TFLite model: {_first_line(exc)}") from None


def _float_regexes(path: Path, layers: tuple[str, ...]) -> list[str]:
    """Recipe regexes that keep `layers` float. TFLite quantizes an activation where it is produced, so a layer
    reads float input only when the op producing that input stays float too (OpenVINO puts the quantizer on the
    consumer's input instead): each layer's op and the producers of its activation inputs are matched."""
    interpreter = _interpreter(path)
    names = {d["index"]: d["name"] for d in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()  # the public API has no graph; this lists each op's input/output tensors
    producer = {out: op for op in ops for out in op["outputs"]}
    regexes = []
    for layer in layers:
        regex = layer_regex(layer)
        mine = [op for op in ops if any(re.search(regex, names.get(t, "")) for t in op["outputs"])]
        if not mine:
            raise ExportError(
                f"cannot find layer {layer} in the tensor names litert-torch wrote, so it cannot be kept in float",
                fix="keep other layers in float, or export fp16/fp32",
            )
        regexes.append(regex)
        inside = {op["index"] for op in mine}  # the layer's ops: its PAD/TRANSPOSE carry its name too
        for op in mine:
            source = producer.get(op["inputs"][0]) if len(op["inputs"]) else None
            if source is not None and source["index"] not in inside:
                # the quantizer matches an op by its scope: its output tensor names, each followed by ';'
                regexes.append("^" + re.escape(names[source["outputs"][0]]) + ";$")
    return regexes


def _signature_input(path: Path) -> str:
    inputs = _interpreter(path).get_signature_list()[_SIGNATURE]["inputs"]
    if len(inputs) != 1:
        raise ExportError(f"int8 calibration feeds one image input; the model takes {len(inputs)} inputs")
    return inputs[0]


def _precision_of(interpreter) -> str:
    types = {np.dtype(d["dtype"]).name for d in interpreter.get_tensor_details()}
    if "int8" in types:
        return "int8"
    return "fp16" if "float16" in types else "fp32"


def _spec(detail) -> TensorSpec:
    signature = detail.get("shape_signature")
    shape = tuple(
        int(d) if d >= 0 else "batch"
        for d in (signature if signature is not None and len(signature) else detail["shape"])
    )
    quantized = np.dtype(detail["dtype"]).kind in "iu" and detail.get("quantization", (0.0, 0))[0]
    return TensorSpec(detail["name"], shape, "float32" if quantized else np.dtype(detail["dtype"]).name)


@contextlib.contextmanager
def _quiet():
    """litert-torch and ai-edge-quantizer warn and print progress bars; the CLI shows its own progress."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def _tool_versions() -> dict[str, str]:
    versions = {p: _version(p) for p in ("torch", "litert-torch", "ai-edge-litert", "ai-edge-quantizer")}
    return {k: v for k, v in versions.items() if v != "unknown"}
