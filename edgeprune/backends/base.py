"""What a backend declares (capabilities, tolerances) and provides (export, describe an existing file).

Running an artifact happens on the target, inside `targets/agent.py`, for every runtime and every target
(the host included), so verification and profiling always exercise the runtime the app will ship with.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from edgeprune.errors import ConfigError
from edgeprune.fileio import sha256_file
from edgeprune.models.base import LoadedModel
from edgeprune.runtimes import RUNTIMES
from edgeprune.types import Artifact, TargetProfile
from edgeprune.verify.parity import Tolerances


class Backend(ABC):
    """One runtime/format. Subclasses declare the class attributes and implement the private methods."""

    name: str  # registry name, also the runtime name the agent uses; the rest of this block is its RUNTIMES entry
    format: str  # what `--format` calls it
    suffix: str  # the file type export writes
    suffixes: tuple[str, ...]  # every file type `describe` accepts
    precisions: tuple[str, ...]
    default_precision: str = "fp32"
    calibrated: tuple[str, ...] = ()  # precisions whose export needs calibration images from the user's data
    quantization_aware: tuple[str, ...] = ()  # precisions its toolchain can also train for (--qat-epochs)
    tolerances_by_precision: dict[str, Tolerances]  # with the evidence for each, where the backend declares them

    def __init_subclass__(cls, **kwargs) -> None:
        """A backend declares its `name`; its format, file types and precisions are that runtime's entry."""
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            facts = RUNTIMES[cls.name]
            cls.format, cls.suffixes, cls.precisions = facts.format, facts.suffixes, facts.precisions
            cls.suffix = facts.suffixes[0]

    builds_on_device = False  # True: its export runs on the target device (TensorRT builds engines there)

    def for_target(self, target: TargetProfile | None) -> Backend:
        """This backend exporting for `target`: the same for exporters that run on the host; one that must build on
        the device (TensorRT) binds to it."""
        return self

    def check_precision(self, precision: str | None) -> str:
        precision = precision or self.default_precision
        if precision not in self.precisions:
            raise ConfigError(
                f"{self.format} export does not support precision {precision}",
                expected=" | ".join(self.precisions),
                fix="pick a supported --precision (more precisions come with their backends)",
            )
        return precision

    def export(
        self,
        model: LoadedModel,
        out_dir: Path,
        precision: str | None = None,
        *,
        calibration: np.ndarray | None = None,
        float_layers: tuple[str, ...] = (),
    ) -> Artifact:
        """Write the model in this format under `out_dir`; the Artifact records what was written and how.

        `calibration`: preprocessed images (N, C, H, W) for the precisions in `calibrated` (int8), and only for
        them. `float_layers`: PyTorch module names of layers an int8 export keeps in float (mixed precision)."""
        precision = self.check_precision(precision)
        if precision in self.calibrated and calibration is None:
            raise ConfigError(
                f"{self.format} {precision} export needs calibration images",
                fix="pass --data (an ImageFolder directory, or a YOLO data yaml for detectors)",
            )
        if precision not in self.calibrated and calibration is not None:
            raise ConfigError(
                f"--data calibrates {' / '.join(self.calibrated) or 'no precision'} {self.format} "
                f"exports; {precision} takes no calibration",
                fix="drop --data for this export",
            )
        if float_layers and precision not in self.calibrated:
            raise ConfigError(
                f"keeping layers in float applies to {' / '.join(self.calibrated) or 'no'} "
                f"{self.format} exports, not {precision}",
                fix="drop --keep-float",
            )
        rank = len(model.inputs[0].shape)
        if calibration is not None and (calibration.ndim != rank or not len(calibration)):
            raise ConfigError(f"calibration inputs have shape {calibration.shape}",
                              expected=f"N ≥ 1 samples of the model's input, rank {rank} (N, C, H, W for images)")  # fmt: skip
        out_dir.mkdir(parents=True, exist_ok=True)
        if precision in self.calibrated:
            return self._export_calibrated(model, out_dir, precision, calibration, tuple(float_layers))
        return self._export(model, out_dir, precision)

    def describe(self, path: Path, model: LoadedModel) -> Artifact:
        """An Artifact for a file the user already has (e.g. `verify --artifact`)."""
        if not path.is_file():
            raise ConfigError(f"artifact file not found: {path}", fix="check the --artifact path")
        if path.suffix not in self.suffixes:
            raise ConfigError(
                f"--artifact {path} is not a {self.format} file", expected=f"a {' or '.join(self.suffixes)} file"
            )
        artifact = self._describe(path, model)
        expected = [spec.shape for spec in model.inputs]
        found = [spec.shape for spec in artifact.inputs]
        if len(found) != len(expected) or not all(map(_shapes_fit, found, expected)):
            raise ConfigError(
                f"{path} takes inputs {found} but {model.spec} takes {expected}",
                fix="pass the --model this artifact was exported from",
            )
        return artifact

    def _artifact(self, model: LoadedModel, files: list[Path], **described) -> Artifact:
        """The Artifact of `files`, exported from `model`; `described`: what only the format can tell (precision,
        inputs, outputs, exporter, opset, tool versions, calibration)."""
        return Artifact(
            format=self.format,
            files=tuple(str(f.resolve()) for f in files),
            sha256={f.name: sha256_file(f) for f in files},
            preprocessing=model.preprocessing,
            model=model.spec,
            model_fingerprint=model.fingerprint,
            detection=model.detection,
            **described,
        )

    def tolerances(self, precision: str | None) -> Tolerances:
        return self.tolerances_by_precision[self.check_precision(precision)]

    @abstractmethod
    def _export(self, model: LoadedModel, out_dir: Path, precision: str) -> Artifact: ...

    @abstractmethod
    def _describe(self, path: Path, model: LoadedModel) -> Artifact: ...

    def _export_calibrated(
        self, model: LoadedModel, out_dir: Path, precision: str, calibration: np.ndarray, float_layers: tuple[str, ...]
    ) -> Artifact:
        raise NotImplementedError(f"{type(self).__name__} declares calibrated precisions but cannot export them")

    def check_quantization_aware(self, precision: str | None) -> str:
        """`precision` when this backend can train for it (--qat-epochs), else a ConfigError naming who can."""
        precision = self.check_precision(precision)
        if precision in self.quantization_aware:
            return precision
        able = [backend.name for backend in _backends() if backend.quantization_aware]
        fix = f"drop --qat-epochs, or use --runtime {' / '.join(able)} --precision int8" if able else "drop it"
        if precision in self.calibrated:
            raise ConfigError(f"--qat-epochs: {self.name} {precision} is quantized after training only "
                              "(its toolchain has no quantization-aware training in edgeprune)", fix=fix)  # fmt: skip
        raise ConfigError(f"--qat-epochs trains for int8; {self.name} {precision} is not quantized", fix=fix)

    def fake_quantized(self, model: LoadedModel, precision: str, calibration: np.ndarray):
        """A copy of `model.module` with the runtime toolchain's fake quantization inserted and initialised on
        `calibration`, trainable like the float model (quantization-aware training); for `export_fake_quantized`."""
        raise NotImplementedError(f"{type(self).__name__} has no quantization-aware training")

    def export_fake_quantized(self, model: LoadedModel, module, out_dir: Path, precision: str, *,
                              calibration_images: int, epochs: int) -> Artifact:  # fmt: skip
        """Write `module` (from `fake_quantized`, then trained `epochs` epochs) as this runtime's int8 model; `model`
        is the float model it came from (inputs, preprocessing, spec)."""
        raise NotImplementedError(f"{type(self).__name__} has no quantization-aware training")


def _backends() -> list[Backend]:
    from edgeprune.backends._registry import backend_names, get_backend

    return [get_backend(name) for name in backend_names()]


def _shapes_fit(found: tuple, expected: tuple) -> bool:
    """Same rank, and every dimension equal where both are fixed (a named dimension fits anything)."""
    return len(found) == len(expected) and all(
        isinstance(a, str) or isinstance(b, str) or a == b for a, b in zip(found, expected)
    )


def recorded_artifact(path: Path) -> Artifact | None:
    """The Artifact the exporter wrote beside `path` (artifact.json), when it still describes this very file."""
    sidecar = path.with_name("artifact.json")
    if sidecar.is_file():
        recorded = Artifact.load(sidecar)
        if recorded.sha256.get(path.name) == sha256_file(path):
            return recorded
    return None
