"""Saving a pruned model without pickles: the replayable PrunePlan (JSON) plus its tensors (safetensors).

Reloading loads the base model spec, replays the plan (removed blocks → rewrites → channel history) to get the
pruned architecture, then loads the tensors strictly. Nothing is unpickled, so no --trust-pickle is needed, and
no code runs that the user did not name (a `python:` base needs --trust-code).
The model's family writes its own files beside them (`ModelFamily.extra_files`: Darknet cfg + weights for
Darknet users, a .pt that `ultralytics.YOLO` loads and trains) and its name goes into the plan file, so a reload
has the same family whatever spec it is reloaded by.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from edgeprune.errors import ModelError, UnknownName
from edgeprune.models.base import LoadedModel, LoadOptions, untrusted_code
from edgeprune.models.family import ModelFamily, family_named, lazy
from edgeprune.types import PrunePlan

PLAN_FILE = "prune_plan.json"
WEIGHTS_FILE = "model.safetensors"
FAMILY_KEY = "family"  # in the plan file, beside PrunePlan's fields: the family's name
# replaying a plan is edgeprune.prune's work, and that package imports this one: named here, imported when used
_REPLAY = ("edgeprune.prune.depth:replay_blocks", "edgeprune.prune.rewrites:replay_rewrites",
           "edgeprune.prune.channels:replay_channels")  # fmt: skip


def save_pruned(loaded: LoadedModel, plan: PrunePlan, out_dir: Path) -> list[Path]:
    """Write the weights (and the family's own files: cfg + weights for Darknet, a .pt for ultralytics), then the
    plan with the family's name, which makes the folder a saved model: a write that fails (a full disk) leaves no
    folder that looks loadable. Returns the files written."""
    from edgeprune.fileio import write_text

    written = [save_state_dict(loaded.module, out_dir / WEIGHTS_FILE)]
    written += loaded.family.extra_files(loaded, out_dir)
    saved = {**plan.to_dict(), FAMILY_KEY: loaded.family.name}
    written.append(write_text(out_dir / PLAN_FILE, json.dumps(saved, indent=2) + "\n"))
    return written


def save_state_dict(module, path: Path) -> Path:
    """The module's tensors as a safetensors file (written whole or not at all)."""
    from safetensors.torch import save_file

    from edgeprune.fileio import writing

    state = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in module.state_dict().items()}
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
    loaded.family = _saved_family(directory, loaded.family)
    replay_plan(loaded, plan)
    load_into(loaded.module, read_state_dict(directory / WEIGHTS_FILE), directory / WEIGHTS_FILE)
    loaded.module.eval()
    loaded.sparsity = plan.sparsity  # the saved weights carry the zeros; the plan says which pattern they form
    loaded.spec = f"edgeprune:{directory}"
    loaded.weights = str(directory / WEIGHTS_FILE)
    loaded._fingerprint = None
    return loaded


def replay_plan(loaded: LoadedModel, plan: PrunePlan) -> None:
    """Remove, rewrite and prune `loaded` in place as `plan` did its base model; the weights that survive keep
    `loaded`'s values (a saved model loads its own over them; a rewind keeps a checkpoint's)."""
    for replay, steps in zip(_REPLAY, (plan.removed_blocks, plan.rewrites, plan.channel_history)):
        lazy(replay)(loaded, steps)


def _saved_family(directory: Path, base: ModelFamily) -> ModelFamily:
    """The family named in the folder's plan file; a folder saved before families were recorded has the family
    of the base model the plan replays on (this is where it is inferred, once)."""
    name = json.loads((directory / PLAN_FILE).read_text()).get(FAMILY_KEY)
    if name is None:
        return base
    try:
        family = family_named(name)
    except UnknownName:
        raise ModelError(f"{directory / PLAN_FILE} names model family {name!r}, which this edgeprune does not know",
                         fix="load it with the edgeprune version that saved it") from None  # fmt: skip
    if family.name != base.name:
        raise ModelError(f"{directory / PLAN_FILE} names model family {name!r}, but its base model loads as a "
                         f"{base.name} model", fix="save the pruned model again")  # fmt: skip
    return family


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
