"""Where training runs: `--device auto|cpu|cuda|cuda:N`, and the mixed precision used there."""

from __future__ import annotations

import contextlib

import torch

from edgeprune.errors import ConfigError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def resolve_device(spec: str | torch.device) -> torch.device:
    """auto = the first CUDA device when there is one, else the CPU; `cuda`/`cuda:N` must exist here."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    name = spec.strip().lower()
    if name == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    kind, sep, index = name.partition(":")
    if kind != "cuda" or (sep and not index.isdigit()):
        raise ConfigError(f"--device {spec!r} is not a device", expected=DEVICE_CHOICES)
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {spec}: CUDA is not available here (no CUDA GPU or no CUDA build of torch)",
                          fix="use --device cpu, or auto to take a GPU only where there is one")  # fmt: skip
    number = int(index) if sep else 0
    if number >= torch.cuda.device_count():
        raise ConfigError(f"--device {spec}: there is no CUDA device {number} here",
                          expected=f"an index below {torch.cuda.device_count()}")  # fmt: skip
    return torch.device("cuda", number)


def ultralytics_device(device: torch.device) -> str:
    """The `device=` argument ultralytics' trainer understands: "cpu" or the CUDA index ("0")."""
    return "cpu" if device.type == "cpu" else str(device.index or 0)


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 where the GPU has it, else fp16 (with a GradScaler); None (fp32) on the CPU, whose results stay those
    of a plain fp32 run."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    dtype = amp_dtype(device)
    return torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for fp16 only (bf16 has fp32's range); disabled otherwise, where it is a no-op."""
    return torch.amp.GradScaler("cuda", enabled=amp_dtype(device) == torch.float16)
