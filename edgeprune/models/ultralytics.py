"""ultralytics YOLO detectors: a packaged model yaml (random init, seeded) or a trained `.pt` (a pickle: only
with --trust-pickle). Runs offline (YOLO_OFFLINE=1); never downloads. A pruned one is also saved as a `.pt` that
`ultralytics.YOLO` loads and trains (`save_ultralytics_pt`)."""

from __future__ import annotations

import copy
import re
from datetime import datetime
from pathlib import Path

import torch
from torch import nn

from edgeprune import __version__ as edgeprune_version
from edgeprune._ultralytics import import_ultralytics
from edgeprune.errors import ConfigError, ModelError, UnknownName
from edgeprune.fileio import writing
from edgeprune.models.base import LoadedModel, LoadOptions, image_input, seeded_init, untrusted_code
from edgeprune.models.family import ModelFamily
from edgeprune.models.weights import load_into, read_state_dict
from edgeprune.types import DetectionHead, Preprocessing

DEFAULT_IMGSZ = 640
ULTRALYTICS_FILE = "model.pt"  # beside a saved pruned model, for ultralytics users (YOLO() loads it)


def _ultralytics_files(loaded: LoadedModel, out_dir: Path) -> list[Path]:
    return [save_ultralytics_pt(loaded, out_dir / ULTRALYTICS_FILE)]


def _decoded(raw):
    return raw  # the exported head already gives (N, 4 + C, A)


FAMILY = ModelFamily(
    "ultralytics",
    depth=("edgeprune.prune.depth_ultralytics",),
    rewrites=("ultralytics-c2f-split-cv1", "ultralytics-c2psa-split-cv1"),
    detection_finetuner="edgeprune.train.stages:finetune_ultralytics_stage",
    extra_files=_ultralytics_files,
    detection_prediction=_decoded,
)


def names() -> list[str]:
    """Model yamls shipped inside ultralytics, with each scaled variant spelled out (yolov8.yaml → yolov8n.yaml …)."""
    import yaml

    found = set()
    for path in (Path(import_ultralytics().__file__).parent / "cfg" / "models").rglob("*.yaml"):
        found.add(path.name)
        scales = (yaml.safe_load(path.read_text()) or {}).get("scales") or {}
        stem, digits = path.stem, re.search(r"\d+", path.stem)
        if digits:  # ultralytics' naming: the scale letter follows the version digits (yolov8n, yolo11s-seg)
            cut = digits.end()
            found.update(f"{stem[:cut]}{scale}{stem[cut:]}.yaml" for scale in scales)
    return sorted(found)


def load(name: str, options: LoadOptions) -> LoadedModel:
    import_ultralytics()
    path = Path(name)
    if path.suffix == ".pt":
        model = _load_checkpoint(path, options)
    elif path.suffix in (".yaml", ".yml"):
        model = _build_from_yaml(path, options)
    else:
        raise ModelError(f"ultralytics model {name!r} is neither a .pt checkpoint nor a model .yaml")
    from ultralytics.nn.tasks import guess_model_task

    task = guess_model_task(model)
    if task != "detect":
        raise ModelError(f"{name} is a {task} model; edgeprune handles ultralytics detection models so far")
    head = model.model[-1]
    if getattr(head, "end2end", False):
        raise ModelError(f"{name} has an end-to-end (NMS-free) head, which edgeprune does not decode yet")
    # the flags ultralytics' own exporter sets: forward returns only the decoded (N, 4+C, A), and anchors are
    # rebuilt from the input's shape in the graph instead of cached by shape (which pins the batch size)
    head.export, head.dynamic = True, True
    imgsz = _imgsz(model)
    num_classes = int(head.nc)
    return LoadedModel(
        module=model.eval(),
        spec=f"ultralytics:{name}",
        task="detection",
        inputs=image_input(imgsz, imgsz),
        # ultralytics' LetterBox: aspect kept, centred, grey (114) border, OpenCV bilinear resize, RGB, /255
        preprocessing=Preprocessing(crop=(imgsz, imgsz), antialias=False, letterbox=True, pad_value=114 / 255),
        class_names=tuple(model.names[i] for i in range(num_classes)),
        weights=options.weights or (str(path) if path.suffix == ".pt" else None),
        # `yolo val` defaults
        detection=DetectionHead("ultralytics", num_classes, conf_threshold=0.001, iou_threshold=0.7, max_det=300),
        family=FAMILY,
    )


def _load_checkpoint(path: Path, options: LoadOptions):
    if not path.is_file():
        raise ModelError(f"model file not found: {path}", fix="edgeprune never downloads; pass the path of a local .pt")
    if not options.trust_pickle:
        raise ModelError(
            f"{path} is a pickle, and loading it runs code from the file",
            fix="pass --trust-pickle only if you trust where the file came from",
        )
    if options.weights:
        raise ModelError(
            f"{path} carries its own weights", fix="drop --weights, or build from a .yaml and pass --weights"
        )
    import torch

    # Read the pickle ourselves: ultralytics' loader renames some files (yolov5n.pt → yolov5nu.pt) and downloads.
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except ModuleNotFoundError as exc:
        raise ModelError(
            f"{path} was pickled against a package that is not installed ({exc.name}); checkpoints of the yolov5 "
            "repository need its `models` package",
            fix="export it to ONNX with the tool that trained it, or re-save it with ultralytics",
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise ModelError(f"{path} is not a loadable ultralytics checkpoint: {str(exc).splitlines()[0][:160]}") from None
    model = (checkpoint.get("ema") or checkpoint.get("model")) if isinstance(checkpoint, dict) else None
    if not isinstance(model, torch.nn.Module):
        raise ModelError(
            f"{path} holds no ultralytics model", expected="a dict with 'model' or 'ema' (as ultralytics saves)"
        )
    return model.float()


def _build_from_yaml(path: Path, options: LoadOptions):
    from ultralytics import YOLO

    if not path.is_file():
        packaged = names()
        if path.name not in packaged or path.parent != Path("."):
            raise UnknownName(
                "ultralytics model yaml",
                str(path),
                packaged,
                fix="give an existing .yaml path or a yaml packaged with ultralytics",
            )
    code = _code_in_yaml(path) if path.is_file() and not options.trust_code else None
    if code:
        raise untrusted_code(f"{path} {code}, which ultralytics runs as Python code when it builds the model", path)
    model = seeded_init(lambda: YOLO(str(path)).model)
    if options.weights:
        load_into(model, read_state_dict(options.weights, trust_pickle=options.trust_pickle), options.weights)
    return model


def _code_in_yaml(path: Path) -> str | None:
    """What in a model yaml ultralytics would run as code, or None. ultralytics eval()s `activation`, and calls
    whatever its module namespace holds under a layer's name with the yaml's arguments (a checkpoint loader
    included); the layers and activations of a real model are torch.nn / torchvision.ops / ultralytics layers."""
    import ast

    import torch
    import torchvision
    import yaml
    from ultralytics.nn import tasks

    try:
        spec = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError, OSError):
        return None  # not readable as a model yaml: ultralytics says so, running nothing
    if not isinstance(spec, dict):
        return None

    def is_layer(obj) -> bool:
        return isinstance(obj, type) and issubclass(obj, torch.nn.Module)

    act = spec.get("activation")
    if act is not None:
        try:
            call = ast.parse(str(act).strip(), mode="eval").body
            func = ast.unparse(call.func) if isinstance(call, ast.Call) else ""
            for argument in [*call.args, *(k.value for k in call.keywords)]:
                ast.literal_eval(argument)  # raises on anything but a literal
        except (SyntaxError, ValueError, TypeError, AttributeError):
            func = ""
        name = func.removeprefix("torch.").removeprefix("nn.")
        if func not in (f"nn.{name}", f"torch.nn.{name}") or not is_layer(getattr(torch.nn, name, None)):
            return f"sets activation {act!r}"
    for entry in [*(spec.get("backbone") or []), *(spec.get("head") or [])]:
        layer = entry[2] if isinstance(entry, (list, tuple)) and len(entry) > 2 and isinstance(entry[2], str) else None
        if layer is None:
            continue
        if layer.startswith("nn."):
            obj = getattr(torch.nn, layer[3:], None)
        elif layer.startswith("torchvision.ops."):
            obj = getattr(torchvision.ops, layer[16:], None)
        else:
            obj = getattr(tasks, layer, None)
        if obj is not None and not is_layer(obj):
            return f"names {layer!r} as a layer"
    return None


def _imgsz(model) -> int:
    args = getattr(model, "args", None)
    imgsz = args.get("imgsz") if isinstance(args, dict) else getattr(args, "imgsz", None)
    if isinstance(imgsz, (list, tuple)):
        imgsz = max(imgsz)
    return int(imgsz or DEFAULT_IMGSZ)


def save_ultralytics_pt(loaded: LoadedModel, path: str | Path, *, half: bool = False) -> Path:
    """Write the (pruned) model as an ultralytics checkpoint that `ultralytics.YOLO(path)` loads for predict, val,
    export, and — with `trainer=PrunedDetectionTrainer` — train.

    The layout is ultralytics' own (as `Model.save` and the trainer write it): the module under "model" with its
    `yaml`, `names`, `stride` and `args`, plus "train_args", "date" and "version". ultralytics stores fp16;
    `half=False` (the default) keeps fp32, which YOLO loads unchanged, so it computes what edgeprune's module does.
    """
    check_ultralytics_detector(loaded)
    path = Path(path)
    if path.suffix != ".pt":
        raise ConfigError(f"{path} does not end in .pt", fix="ultralytics loads checkpoints by their .pt suffix")
    ultralytics = import_ultralytics()
    model = inference_copy(loaded)
    model = model.half() if half else model.float()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    args = {**model.args, "imgsz": input_size(loaded)}
    model.args = args
    checkpoint = {
        "date": datetime.now().astimezone().isoformat(),
        "version": ultralytics.__version__,
        "license": "AGPL-3.0 License (https://ultralytics.com/license)",
        "docs": "https://docs.ultralytics.com",
        "model": model,
        "ema": None,
        "optimizer": None,
        "updates": None,
        "best_fitness": None,
        "epoch": -1,
        "train_args": args,
        "edgeprune": {"version": edgeprune_version, "spec": loaded.spec, "fingerprint": loaded.fingerprint},
    }
    with writing(path) as tmp:
        torch.save(checkpoint, tmp)
    return path


def check_ultralytics_detector(loaded: LoadedModel) -> None:
    import_ultralytics()
    from ultralytics.nn.tasks import DetectionModel

    if not isinstance(loaded.module, DetectionModel) or loaded.detection is None:
        raise ConfigError(
            f"{loaded.spec} is not an ultralytics detection model ({type(loaded.module).__name__})",
            expected="a model loaded from an ultralytics .yaml or .pt",
        )


def inference_copy(loaded: LoadedModel) -> nn.Module:
    """A copy of the module as ultralytics' own checkpoints hold it: eval mode, head in its default layout,
    no loss criterion, class names from the LoadedModel."""
    model = copy.deepcopy(loaded.module).eval()
    set_head_layout(model, export=False, dynamic=False)
    if hasattr(model, "criterion"):
        model.criterion = None
    if loaded.class_names:
        model.names = dict(enumerate(loaded.class_names))
    args = getattr(model, "args", None) or {}
    model.args = dict(args) if isinstance(args, dict) else dict(vars(args))
    return model


def set_head_layout(model: nn.Module, *, export: bool, dynamic: bool) -> None:
    """The Detect head's `export` (forward returns only the decoded boxes) and `dynamic` (anchors rebuilt from
    each input's shape) flags, which edgeprune's loader turns on and ultralytics' predict/val/train expect off."""
    head = model.model[-1]
    head.export, head.dynamic = export, dynamic


def input_size(loaded: LoadedModel) -> int:
    return int(max(loaded.inputs[0].shape[-2:]))
