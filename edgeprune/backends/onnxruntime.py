"""ONNX export (torch.onnx, dynamo exporter) for ONNX Runtime.

Exporter choice: torch 2.14's default dynamo exporter (`torch.export` + onnxscript). The TorchScript exporter
is deprecated upstream and misses newer ops; the dynamo one also runs onnxscript's graph optimiser. The file is
self-contained (`external_data=False`) unless the weights approach protobuf's 2 GB limit, and the batch
dimension stays symbolic so verification can run batches.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

from edgeprune.backends._export_rewrites import rewrite_for_export
from edgeprune.backends.base import Backend, recorded_artifact
from edgeprune.errors import ConfigError, ExportError
from edgeprune.fileio import staged
from edgeprune.models.base import LoadedModel, flatten_outputs, output_names
from edgeprune.types import Artifact, TensorSpec
from edgeprune.verify.parity import Tolerances

_PROTOBUF_LIMIT = 2 * 1024**3
_EXPORT_BATCH = 2  # an example batch of 1 would let torch.export specialise the batch dimension to 1
_TOLERANCES = {
    "fp32": Tolerances(
        max_abs=1e-4,
        max_abs_rel_range=1e-4,
        cosine=0.9999,
        metric=0.002,
        why="fp32 on CPU: ORT fuses and reorders sums (seen ~4e-6 on ResNet-56 logits); "
        "top-1 can only move on near-ties",
    ),
}


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    tolerances_by_precision = _TOLERANCES

    def _export(self, model: LoadedModel, out_dir: Path, precision: str) -> Artifact:
        import torch

        path = out_dir / "model.onnx"
        stale_data = path.with_name(path.name + ".data")
        stale_data.unlink(missing_ok=True)
        example = model.example_inputs(_EXPORT_BATCH)
        module, rewrites = rewrite_for_export(model.module)
        with torch.inference_mode():
            n_outputs = len(flatten_outputs(module(*example)))
        names = output_names(n_outputs)
        batch = torch.export.Dim("batch")
        dynamic = tuple({0: batch} if isinstance(spec.shape[0], str) else None for spec in model.inputs)
        weight_bytes = sum(t.numel() * t.element_size() for t in model.module.state_dict().values())
        external = weight_bytes > 0.9 * _PROTOBUF_LIMIT
        # staged: the file (and its external data) appear under their names only once completely written
        with staged(out_dir, last=path.name, needs=weight_bytes) as staging:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    torch.onnx.export(
                        module,
                        example,
                        str(staging / path.name),
                        input_names=[spec.name for spec in model.inputs],
                        output_names=names,
                        dynamo=True,
                        external_data=external,
                        dynamic_shapes=dynamic,
                        optimize=True,
                        verbose=False,
                    )
            except Exception as exc:  # the exporter raises many types; all mean the same to the user
                first_line = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                raise ExportError(
                    f"torch.onnx (dynamo) could not export {model.spec}: {first_line}",
                    fix="make the model traceable by torch.export (no data-dependent Python control flow)",
                ) from exc
        files = [path] + ([stale_data] if external else [])
        exporter = f"torch.onnx dynamo (torch {torch.__version__})" + "".join(f"; {r}" for r in rewrites)
        artifact = self._artifact_for(path, files, model, exporter=exporter)
        pinned = [
            spec.name
            for spec, want in zip(artifact.inputs, model.inputs)
            if isinstance(want.shape[0], str) and not isinstance(spec.shape[0], str)
        ]
        if pinned:
            raise ExportError(
                f"torch.onnx fixed the batch dimension of {', '.join(pinned)} to {_EXPORT_BATCH} while exporting "
                f"{model.spec} (some Python in forward depends on the batch size)",
                fix="make forward independent of the batch size (no shape-keyed caches)",
            )
        return artifact

    def _describe(self, path: Path, model: LoadedModel) -> Artifact:
        recorded = recorded_artifact(path)
        if recorded is not None:
            return recorded
        files = [path] + [f for f in (path.with_name(path.name + ".data"),) if f.exists()]
        return self._artifact_for(path, files, model, exporter="unknown (file given with --artifact)")

    def _artifact_for(self, path: Path, files: list[Path], model: LoadedModel, exporter: str) -> Artifact:
        import onnx

        try:
            onnx.checker.check_model(str(path), full_check=True)
            proto = onnx.load(str(path), load_external_data=False)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, OSError, ValueError) as exc:
            raise ConfigError(f"{path} is not a valid ONNX model: {str(exc).splitlines()[0][:200]}") from None
        initializers = {init.name for init in proto.graph.initializer}
        inputs = tuple(_spec(v) for v in proto.graph.input if v.name not in initializers)
        opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
        return self._artifact(
            model, list(files), precision="fp32", inputs=inputs, outputs=tuple(_spec(v) for v in proto.graph.output),
            exporter=exporter, opset=opset, tool_versions=_tool_versions(),
        )  # fmt: skip


def _spec(value) -> TensorSpec:
    import onnx

    tensor_type = value.type.tensor_type
    shape = tuple(d.dim_param if d.dim_param else int(d.dim_value) for d in tensor_type.shape.dim)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
    return TensorSpec(value.name, shape, dtype)


def _tool_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("torch", "onnx", "onnxscript", "onnxruntime"):
        with contextlib.suppress(PackageNotFoundError):
            versions[package] = version(package)
    return versions
