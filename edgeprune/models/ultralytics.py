"""ultralytics YOLO detectors: a packaged model yaml (random init, seeded) or a trained `.pt` (a pickle: only
with --trust-pickle). Runs offline (YOLO_OFFLINE=1); never downloads."""

from __future__ import annotations

import re
from pathlib import Path

from edgeprune._ultralytics import import_ultralytics
from edgeprune.errors import ModelError, UnknownName
from edgeprune.models.base import LoadedModel, LoadOptions, image_input, seeded_init, untrusted_code
from edgeprune.models.weights import load_into, read_state_dict
from edgeprune.types import DetectionHead, Preprocessing

DEFAULT_IMGSZ = 640


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
