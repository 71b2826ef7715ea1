"""Saving a pruned model without pickles: the replayable PrunePlan (JSON) plus its tensors (safetensors).

Reloading loads the base model spec, replays the plan (removed blocks → rewrites → channel history) to get the
pruned architecture, then loads the tensors strictly. Nothing is unpickled, so no --trust-pickle is needed, and
no code runs that the user did not name (a `python:` base needs --trust-code).
Darknet models are also written as cfg + weights for Darknet users, ultralytics models as a .pt that
`ultralytics.YOLO` loads and trains (with `PrunedDetectionTrainer`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edgeprune.errors import ModelError
from edgeprune.models.base import LoadedModel, LoadOptions, untrusted_code
from edgeprune.types import PrunePlan

PLAN_FILE = "prune_plan.json"
WEIGHTS_FILE = "model.safetensors"
ULTRALYTICS_FILE = "model.pt"  # for ultralytics users (YOLO() loads it); edgeprune reloads the two files above


def save_pruned(loaded: LoadedModel, plan: PrunePlan, out_dir: Path) -> list[Path]:
    """Write the weights (and cfg + weights for Darknet, a .pt for ultralytics), then the plan, which makes the
    folder a saved model: a write that fails (a full disk) leaves no folder that looks loadable. Returns the files
    written."""
    written = [save_state_dict(loaded.module, out_dir / WEIGHTS_FILE)]
    if loaded.spec.startswith("darknet:"):
        from edgeprune.models.darknet import write_cfg, write_weights
        from edgeprune.prune.rewrites import merged_darknet

        darknet = merged_darknet(loaded.module)
        written.append(write_cfg(darknet.cfg_sections(), out_dir / "model.cfg"))
        written.append(write_weights(darknet, out_dir / "model.weights"))
    if loaded.detection is not None and loaded.detection.layout == "ultralytics":
        from edgeprune.train.ultralytics_trainer import save_ultralytics_pt

        written.append(save_ultralytics_pt(loaded, out_dir / ULTRALYTICS_FILE))
    written.append(plan.save(out_dir / PLAN_FILE))
    return written


def save_state_dict(module, path: Path) -> Path:
    """The module's tensors as a safetensors file (written whole or not at all)."""
    from safetensors.torch import save_file

    from edgeprune.fileio import writing

    state = {name: tensor.detach().contiguous().clone() for name, tensor in module.state_dict().items()}
    with writing(path, needs=sum(t.numel() * t.element_size() for t in state.values())) as tmp:
        save_file(state, str(tmp))
    return path


def load_pruned(directory: str | Path, options: LoadOptions | None = None, *,
                named_base: str | None = None) -> LoadedModel:  # fmt: skip
    """Rebuild a saved pruned model: base spec → replayed plan → saved tensors.

    Loading the plan's base runs no code the user did not name: a `python:` base needs `options.trust_code`
    (--trust-code) unless it is `named_base`, the spec the user named on the command line (a build reloading the
    folders it wrote), which is loaded as that user loaded it. A base that is itself a saved folder is loaded the
    same way."""
    return _load_pruned(Path(directory), options or LoadOptions(), named_base, ())


def _load_pruned(directory: Path, options: LoadOptions, named_base: str | None, outer: tuple[Path, ...]) -> LoadedModel:
    from edgeprune.models import load_model, saved_directory
    from edgeprune.models.weights import load_into, read_state_dict
    from edgeprune.prune.channels import replay_channels
    from edgeprune.prune.depth import replay_blocks
    from edgeprune.prune.rewrites import replay_rewrites

    if options.weights:
        raise ModelError(f"{directory} is a saved pruned model with its own weights", fix="drop --weights")
    plan = _read_plan(directory)
    base_options = LoadOptions(trust_pickle=options.trust_pickle, input_shape=options.input_shape,
                               trust_code=options.trust_code)  # fmt: skip
    if named_base is not None and _same_spec(plan.base_model, named_base):
        base_options = dataclasses.replace(base_options, trust_pickle=True, trust_code=True)
    nested = saved_directory(plan.base_model)
    if nested is not None:
        seen = (*outer, directory.resolve())
        if Path(nested).resolve() in seen:
            raise ModelError(f"{directory / PLAN_FILE} names {plan.base_model} as its base model, which leads back "
                             f"to {directory}", fix="save the pruned model again")  # fmt: skip
        loaded = _load_pruned(Path(nested), base_options, named_base, seen)
    else:
        if plan.base_model.partition(":")[0] == "python" and not base_options.trust_code:
            raise untrusted_code(f"{directory.resolve() / PLAN_FILE} names {plan.base_model} as its base model, and "
                                 "loading it imports and runs that Python module", directory.resolve())  # fmt: skip
        loaded = load_model(plan.base_model, base_options)
    replay_blocks(loaded, plan.removed_blocks)
    replay_rewrites(loaded, plan.rewrites)
    replay_channels(loaded, plan.channel_history)
    load_into(loaded.module, read_state_dict(directory / WEIGHTS_FILE), directory / WEIGHTS_FILE)
    loaded.module.eval()
    loaded.spec = f"edgeprune:{directory}"
    loaded.weights = str(directory / WEIGHTS_FILE)
    loaded._fingerprint = None
    return loaded


def _same_spec(spec: str, other: str) -> bool:
    """Whether two specs name the same model (a plan stores a model file by its absolute path)."""
    family, _, name = spec.partition(":")
    other_family, _, other_name = other.partition(":")
    if spec == other or family != other_family:
        return spec == other
    try:
        return Path(name).resolve() == Path(other_name).resolve()
    except (ValueError, OSError):  # not a path (a NUL byte, a loop of links)
        return False


def _read_plan(directory: Path) -> PrunePlan:
    """The folder's plan, or one line saying what is missing or damaged."""
    path = directory / PLAN_FILE
    if not path.is_file():
        raise ModelError(f"{directory} is not a saved edgeprune model", expected=f"a directory with {PLAN_FILE}")
    try:
        plan = PrunePlan.load(path)
        if not isinstance(plan.base_model, str) or not plan.base_model:
            raise ValueError(f"base_model {plan.base_model!r} is not a model spec")
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise ModelError(f"{path} is not a prune plan edgeprune can replay ({reason})",
                         fix="save the pruned model again (edgeprune prune --out DIR)") from None  # fmt: skip
    if not (directory / WEIGHTS_FILE).is_file():
        raise ModelError(f"{directory} holds {PLAN_FILE} but not {WEIGHTS_FILE}",
                         fix="copy the whole folder that edgeprune saved")  # fmt: skip
    return plan
