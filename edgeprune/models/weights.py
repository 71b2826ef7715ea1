"""Reading checkpoints without unpickling untrusted code, and loading them into modules with clear errors."""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch

from edgeprune.errors import ModelError

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")


def read_state_dict(path: str | Path, *, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file or a torch checkpoint (weights_only unless the user trusts the pickle)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}", fix="check the --weights path")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc) or "Weights only load failed" in str(exc):
            raise ModelError(
                f"{path} holds Python objects beyond tensors, and loading it would run code from the file",
                fix="pass --trust-pickle only if you trust where the file came from",
            ) from None
        raise _corrupt(path, exc) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise _corrupt(path, exc) from None
    return _unwrap(obj, path)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise _corrupt(path, exc) from None


def _corrupt(path: Path, exc: BaseException) -> ModelError:
    reason = " ".join(str(exc).split())[:160] or type(exc).__name__
    return ModelError(
        f"{path} is not a readable checkpoint (truncated or corrupt: {reason})",
        fix="re-download or re-save the file",
    )


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, torch.nn.Module):  # only reachable with --trust-pickle
        obj = obj.state_dict()
    if isinstance(obj, dict):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(
            f"{path} does not contain a state dict of tensors",
            expected="a checkpoint holding {name: tensor} (optionally under 'state_dict' or 'model')",
        )
    if all(k.startswith("module.") for k in obj):  # saved from DataParallel
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Strict load; a mismatch names the first offending keys and shapes."""
    own = module.state_dict()
    # BatchNorm fills in num_batches_tracked for checkpoints older than it (torch < 0.4.1)
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    if mismatched:
        problems.append(f"{len(mismatched)} with other shapes (e.g. {'; '.join(mismatched[:2])})")
    if problems:
        raise ModelError(
            f"weights {source} do not fit the model: " + ", ".join(problems),
            fix="check that --weights belongs to this --model (architecture and number of classes)",
        )
    if getattr(state, "_metadata", None) is None and state.keys() == own.keys():
        # safetensors keeps only tensors, and modules that check the version of what they load (torchvision's
        # MNASNet) refuse a state dict without one. One with every key of this module's layout is in that layout,
        # so it takes the module's own versions. (Without a version, BatchNorm reads a checkpoint as older than
        # num_batches_tracked and fills that in: what a state dict that lacks those keys needs.)
        state = OrderedDict(state)
        state._metadata = own._metadata
    module.load_state_dict(state, strict=True)
