"""Resumable fine-tuning: after each epoch, everything the next epochs depend on (model, optimizer, schedule,
loss scaler, random states, histories, the best epoch's weights) in one file, written whole or not at all."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeprune.errors import ConfigError
from edgeprune.fileio import writing

CHECKPOINT_FILE = "finetune_checkpoint.pt"
FORMAT = 1


def rng_states() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(states["python"])


def save_checkpoint(folder: Path, payload: dict[str, Any]) -> Path:
    """`payload` (tensors, numbers, strings, lists, dicts) with the random states, as folder/CHECKPOINT_FILE."""
    path = Path(folder) / CHECKPOINT_FILE
    with writing(path, elsewhere="the checkpoint folder") as tmp:
        torch.save({**payload, "format": FORMAT, "rng": rng_states()}, tmp)
    return path


def load_checkpoint(folder: Path, run: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint in `folder`, None when there is none. `run` describes the run (recipe, data size, world
    size): a checkpoint written for another run is refused rather than continued with."""
    path = Path(folder) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise ConfigError(f"cannot read the fine-tuning checkpoint {path} ({type(exc).__name__})",
                          fix=f"delete {path} to start the fine-tuning again") from None  # fmt: skip
    if payload.get("format") != FORMAT or payload.get("run") != run:
        raise ConfigError(
            f"the fine-tuning checkpoint {path} was written by another run (recipe, data or format differ)",
            fix=f"rerun with the same options, or delete {path} to start again",
        )
    return payload
