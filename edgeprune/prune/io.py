"""Saving a pruned model without pickles: the replayable PrunePlan (JSON) plus its tensors (safetensors).

Reloading loads the base model spec, replays the plan (removed blocks → rewrites → channel history) to get the
pruned architecture, then loads the tensors strictly. Nothing is unpickled, so no --trust-pickle is needed.
Darknet models are also written as cfg + weights for Darknet users, ultralytics models as a .pt that
`ultralytics.YOLO` loads and trains (with `PrunedDetectionTrainer`).
"""

from __future__ import annotations

from pathlib import Path

from edgeprune.errors import ModelError
from edgeprune.models.base import LoadedModel, LoadOptions
from edgeprune.types import PrunePlan

PLAN_FILE = "prune_plan.json"
WEIGHTS_FILE = "model.safetensors"
ULTRALYTICS_FILE = "model.pt"  # for ultralytics users (YOLO() loads it); edgeprune reloads the two files above


def is_saved_pruned(path: str | Path) -> bool:
    return (Path(path) / PLAN_FILE).is_file()


def save_pruned(loaded: LoadedModel, plan: PrunePlan, out_dir: Path) -> list[Path]:
    """Write the plan and the weights (and cfg + weights for Darknet); returns the files written."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    written = [plan.save(out_dir / PLAN_FILE)]
    state = {name: tensor.detach().contiguous().clone() for name, tensor in loaded.module.state_dict().items()}
    save_file(state, str(out_dir / WEIGHTS_FILE))
    written.append(out_dir / WEIGHTS_FILE)
    if loaded.spec.startswith("darknet:"):
        from edgeprune.models.darknet import write_cfg, write_weights
        from edgeprune.prune.rewrites import merged_darknet

        darknet = merged_darknet(loaded.module)
        written.append(write_cfg(darknet.cfg_sections(), out_dir / "model.cfg"))
        written.append(write_weights(darknet, out_dir / "model.weights"))
    if loaded.detection is not None and loaded.detection.layout == "ultralytics":
        from edgeprune.train.ultralytics_trainer import save_ultralytics_pt

        written.append(save_ultralytics_pt(loaded, out_dir / ULTRALYTICS_FILE))
    return written


def load_pruned(directory: str | Path, options: LoadOptions | None = None) -> LoadedModel:
    """Rebuild a saved pruned model: base spec → replayed plan → saved tensors."""
    from edgeprune.models import load_model
    from edgeprune.models.weights import load_into, read_state_dict
    from edgeprune.prune.channels import replay_channels
    from edgeprune.prune.depth import replay_blocks
    from edgeprune.prune.rewrites import replay_rewrites

    directory = Path(directory)
    options = options or LoadOptions()
    if options.weights:
        raise ModelError(f"{directory} is a saved pruned model with its own weights", fix="drop --weights")
    plan = PrunePlan.load(directory / PLAN_FILE)
    loaded = load_model(plan.base_model, LoadOptions(trust_pickle=options.trust_pickle))
    replay_blocks(loaded, plan.removed_blocks)
    replay_rewrites(loaded, plan.rewrites)
    replay_channels(loaded, plan.channel_history)
    load_into(loaded.module, read_state_dict(directory / WEIGHTS_FILE), directory / WEIGHTS_FILE)
    loaded.module.eval()
    loaded.spec = f"edgeprune:{directory}"
    loaded.weights = str(directory / WEIGHTS_FILE)
    loaded._fingerprint = None
    return loaded
