"""OpenVINO IR export (.xml + .bin): fp32, fp16 (half-precision weights) and int8 (nncf post-training quantization
calibrated on the user's images), for the OpenVINO runtime on the device (targets/agent_runtimes.OpenVinoSession).

Source: the ONNX file the onnxruntime backend writes (torch.onnx dynamo exporter, batch kept symbolic), read by
`openvino.convert_model`. Converting from PyTorch directly (`convert_model(module, example_input=...)`) gave the
same parity on ResNet-20 (~1e-5), but it renames convolutions after folding BatchNorm (`Multiply_5775`), while
the ONNX route keeps one node per convolution whose weight initializer carries the PyTorch parameter name
(`layer1.0.conv1.weight`): that is how `--keep-float layer1.0.conv1` finds the node to leave out of nncf's
quantization (ignored scope). It also shares the export rewrites (_export_rewrites.py) with ONNX Runtime.

Precision, written where it is decided:
- fp32: `save_model(..., compress_to_fp16=False)` — OpenVINO's default compresses weights to fp16 silently.
- fp16: weights stored as fp16 (`compress_to_fp16=True`); the runtime decompresses them and computes at its
  inference precision, which the agent sets to f32 unless asked for bf16 (this CPU's default is bf16).
- int8: `nncf.quantize`, PERFORMANCE preset (nncf's default for CNNs: int8 weights symmetric per channel, 8-bit
  activations symmetric per tensor, fast bias correction), one calibration image per sample; layers named in
  `float_layers` are nncf's ignored scope.
- int8 after quantization-aware training (`build --qat-epochs`): nncf's PyTorch quantization (same preset) trained
  with the model, then `openvino.convert_model` from PyTorch (`export_fake_quantized`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from edgeprune.backends._quantization import onnx_nodes_of_layers
from edgeprune.backends.base import Backend, recorded_artifact
from edgeprune.errors import ConfigError, ExportError, MissingDependency
from edgeprune.fileio import staged
from edgeprune.models.base import LoadedModel
from edgeprune.types import Artifact, TensorSpec
from edgeprune.verify.parity import Tolerances, int8_tolerances

# Tolerances by precision against PyTorch fp32. Checked on tiny models (tests/backends/) and on the 2000 held-out
# images of benchmarks/export_accuracy.py (ResNet-56 unpruned and pruned, CIFAR-10 JPEGs; benchmarks/RESULTS.md):
# - fp32: ~2e-5 max-abs on ResNet-56 logits (different summation order); top-1 identical.
# - fp16: half-precision weights carry a relative error of ≤ 2^-11 each; seen ~1e-2 of the logit range.
# - int8: the error is the quantization itself; the gate is the task metric (1.0 pt, the acceptance), the
#   parity bound only catches a broken model: mean per-sample cosine ≥ 0.95. Seen 0.9945-0.9957 (mean) while the
#   worst of 2000 samples fell to 0.70, with top-1 within 0.75 pt, so the worst sample is no gate for int8.
_TOLERANCES = {
    "fp32": Tolerances(
        max_abs=1e-4,
        max_abs_rel_range=1e-4,
        cosine=0.9999,
        metric=0.003,
        why="fp32 on CPU at INFERENCE_PRECISION_HINT f32: summation order differs (~1e-5 seen)",
    ),
    "fp16": Tolerances(
        max_abs=1e-2,
        max_abs_rel_range=2e-2,
        cosine=0.999,
        metric=0.005,
        why="fp16 weights (rounding 2^-11 relative), f32 compute",
    ),
    "int8": int8_tolerances("int8 weights and activations (nncf): judged by the task metric, within 1.0 pt"),
}


def _import(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependency(module, extra="openvino", purpose="OpenVINO export") from None


@contextlib.contextmanager
def _nncf_quietly():
    """For the length of an nncf call: no rich bars ("Statistics collection ━━━"; nncf draws them on rich's global
    console), no INFO lines from nncf's logger, no Python warnings, and not torch's "No CUDA runtime is found"
    (logged when nncf imports torch.utils.cpp_extension). The command shows its own progress; nncf's warnings and
    errors still show. Everything is as it was afterwards."""
    import logging

    import rich
    from nncf.common.logging.logger import nncf_logger

    console = rich.get_console()
    loggers = {nncf_logger: logging.WARNING, logging.getLogger("torch.utils.cpp_extension"): logging.ERROR}
    saved_levels, saved_quiet = {logger: logger.level for logger in loggers}, console.quiet
    console.quiet = True
    for logger, level in loggers.items():
        logger.setLevel(level)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        console.quiet = saved_quiet
        for logger, level in saved_levels.items():
            logger.setLevel(level)


class OpenVinoBackend(Backend):
    name = "openvino"
    tolerances_by_precision = _TOLERANCES
    calibrated = ("int8",)
    quantization_aware = ("int8",)

    def _export(self, model: LoadedModel, out_dir: Path, precision: str) -> Artifact:
        ov = _import("openvino")
        with self._from_onnx(model) as (ov_model, onnx_exporter, _):
            path = self._save(ov, ov_model, out_dir, compress_to_fp16=precision == "fp16")
        exporter = f"openvino.convert_model from {onnx_exporter}; save_model compress_to_fp16={precision == 'fp16'}"
        return self._artifact_for(path, model, exporter=exporter, precision=precision)

    def _export_calibrated(
        self, model: LoadedModel, out_dir: Path, precision: str, calibration: np.ndarray, float_layers: tuple[str, ...]
    ) -> Artifact:
        ov = _import("openvino")
        nncf = _import("nncf")
        with self._from_onnx(model) as (ov_model, onnx_exporter, onnx_path):
            nodes = set(onnx_nodes_of_layers(onnx_path, float_layers, "OpenVINO").values())
            # OpenVINO splits a Conv with bias into `<node>/WithoutBiases` (the convolution) and `<node>` (the Add)
            ignored = [
                op.get_friendly_name()
                for op in ov_model.get_ordered_ops()
                if op.get_friendly_name().split("/")[0] in nodes
            ]
            samples = [calibration[i : i + 1] for i in range(len(calibration))]
            scope = nncf.IgnoredScope(names=ignored) if ignored else None
            try:
                with _nncf_quietly():
                    quantized = nncf.quantize(
                        ov_model,
                        nncf.Dataset(samples),
                        subset_size=len(samples),
                        ignored_scope=scope,
                        preset=nncf.QuantizationPreset.PERFORMANCE,
                    )
            except Exception as exc:  # nncf raises many types; all mean the model could not be quantized
                raise ExportError(f"nncf could not quantize {model.spec}: {_first_line(exc)}") from exc
            path = self._save(ov, quantized, out_dir, compress_to_fp16=False)
        exporter = (
            f"nncf {nncf.__version__} int8 (PERFORMANCE preset) on openvino.convert_model from {onnx_exporter}"
            + (f"; float: {', '.join(float_layers)}" if float_layers else "")
        )
        return self._artifact_for(
            path,
            model,
            exporter=exporter,
            precision=precision,
            calibration_images=len(samples),
            float_layers=float_layers,
        )

    def fake_quantized(self, model: LoadedModel, precision: str, calibration: np.ndarray):
        """nncf's PyTorch quantization (the same PERFORMANCE preset as the post-training export), to be trained:
        NNCF's quantization-aware training recipe."""
        import torch

        # nncf compiles its CPU extension on first use and gives up after 60 s by default, leaving a stale lock
        # behind: the compile took ~36 s on a quiet 2-core machine and over 60 s in a cold CI run sharing the cores
        # (2026-12-05). A user's own NNCF_EXTENSION_LOAD_TIMEOUT wins.
        os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "900")
        nncf = _import("nncf")
        samples = [torch.from_numpy(np.ascontiguousarray(calibration[i : i + 1])) for i in range(len(calibration))]
        try:
            with _nncf_quietly():
                return nncf.quantize(model.module.eval(), nncf.Dataset(samples), subset_size=len(samples),
                                     preset=nncf.QuantizationPreset.PERFORMANCE)  # fmt: skip
        except Exception as exc:  # nncf raises many types; all mean the model could not be quantized
            raise ExportError(f"nncf could not insert fake quantization into {model.spec}: {_first_line(exc)}") from exc

    def export_fake_quantized(self, model: LoadedModel, module, out_dir: Path, precision: str, *,
                              calibration_images: int, epochs: int) -> Artifact:  # fmt: skip
        """OpenVINO converts nncf's PyTorch fake quantizers to FakeQuantize ops, which its CPU plugin runs as int8
        kernels (the route NNCF's QAT documentation gives). From PyTorch directly, not ONNX: the dynamo exporter
        does not know nncf's quantizer functions. Batch left dynamic, as the ONNX route leaves it."""
        import torch

        ov = _import("openvino")
        example = model.example_inputs()
        shapes = [ov.PartialShape([-1, *t.shape[1:]]) for t in example]
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # tracing nncf's quantizers warns about Python scalars, harmlessly
                ov_model = ov.convert_model(module.eval(), example_input=example, input=shapes)
        except Exception as exc:  # OpenVINO's frontends raise their own RuntimeError subclasses
            raise ExportError(
                f"openvino.convert_model could not read the trained {model.spec}: {_first_line(exc)}"
            ) from exc
        out_dir.mkdir(parents=True, exist_ok=True)
        path = self._save(ov, ov_model, out_dir, compress_to_fp16=False)
        nncf = _import("nncf")
        exporter = f"nncf {nncf.__version__} quantization-aware training ({epochs} epochs), openvino.convert_model from PyTorch"
        return self._artifact_for(path, model, exporter=exporter, precision=precision,
                                  calibration_images=calibration_images, qat_epochs=epochs)  # fmt: skip

    @contextlib.contextmanager
    def _from_onnx(self, model: LoadedModel):
        from edgeprune.backends.onnxruntime import OnnxRuntimeBackend

        ov = _import("openvino")
        with tempfile.TemporaryDirectory(prefix="edgeprune-ov-") as tmp:
            onnx_artifact = OnnxRuntimeBackend().export(model, Path(tmp))
            try:
                ov_model = ov.convert_model(str(onnx_artifact.path))
            except Exception as exc:  # OpenVINO's frontends raise their own RuntimeError subclasses
                raise ExportError(
                    f"openvino.convert_model could not read the ONNX of {model.spec}: {_first_line(exc)}"
                ) from exc
            yield ov_model, onnx_artifact.exporter, onnx_artifact.path

    @staticmethod
    def _save(ov, ov_model, out_dir: Path, *, compress_to_fp16: bool) -> Path:
        path = out_dir / "model.xml"
        with staged(out_dir, last=path.name) as staging:  # the .xml appears once its .bin is whole
            ov.save_model(ov_model, str(staging / path.name), compress_to_fp16=compress_to_fp16)
        return path

    def _describe(self, path: Path, model: LoadedModel) -> Artifact:
        recorded = recorded_artifact(path)
        if recorded is not None:
            return recorded
        if not path.with_suffix(".bin").is_file():
            raise ConfigError(
                f"{path} has no weights file {path.with_suffix('.bin').name} beside it",
                fix="keep the .bin that OpenVINO wrote with the .xml",
            )
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
        qat_epochs: int | None = None,
    ) -> Artifact:
        ov = _import("openvino")
        try:
            ov_model = ov.Core().read_model(str(path))
        except Exception as exc:
            raise ConfigError(f"{path} is not a readable OpenVINO IR: {_first_line(exc)}") from None
        return self._artifact(
            model, [path, path.with_suffix(".bin")],
            precision=precision or _precision_of(ov_model),
            inputs=tuple(_spec(port, f"input{i}") for i, port in enumerate(ov_model.inputs)),
            outputs=tuple(_spec(port, f"output{i}") for i, port in enumerate(ov_model.outputs)),
            exporter=exporter, opset=None, tool_versions=_tool_versions(),
            calibration_images=calibration_images, float_layers=tuple(float_layers), qat_epochs=qat_epochs,
        )  # fmt: skip


def _precision_of(ov_model) -> str:
    types = {op.get_type_name() for op in ov_model.get_ordered_ops()}
    if "FakeQuantize" in types or "FakeConvert" in types:
        return "int8"
    constants = [op for op in ov_model.get_ordered_ops() if op.get_type_name() == "Constant"]
    if any(op.get_output_element_type(0).get_type_name() == "f16" for op in constants):
        return "fp16"
    return "fp32"


_DTYPES = {"f32": "float32", "f16": "float16", "i64": "int64", "i32": "int32", "u8": "uint8", "i8": "int8"}


def _spec(port, fallback: str) -> TensorSpec:
    names = sorted(port.get_names())
    shape = tuple(
        int(d.get_length()) if d.is_static else ("batch" if i == 0 else f"d{i}")
        for i, d in enumerate(port.get_partial_shape())
    )
    return TensorSpec(
        names[0] if names else fallback, shape, _DTYPES.get(port.get_element_type().get_type_name(), "float32")
    )


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _tool_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("torch", "onnx", "onnxscript", "openvino", "nncf"):
        with contextlib.suppress(PackageNotFoundError):
            versions[package] = version(package)
    return versions
