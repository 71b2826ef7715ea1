"""One bad-input corpus: every malformed file, wrong layout, hostile value and full disk a user can hand edgeprune.

A row is one command as a user types it, the exit code it must end with (2 user error, 3 gate failed, 130
interrupted), a phrase its one-line message must contain, and the paths it must not leave behind. Every row
also checks what holds for all of them: no traceback, the error is one `edgeprune: error:` line, and no
half-written `*.tmp` file is left under the run's folder. Full-disk rows write to a real small tmpfs, which needs
root (CI runs as root); elsewhere they skip and say why.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ASSETS, remount_read_only, run_cli, small_tmpfs


@dataclass(frozen=True)
class Row:
    """One bad input. `argv` may hold {tmp} (this row's private folder), {assets} (../shared/assets) and {disk}
    (a tmpfs of `disk_mib` MiB, filled to its last `disk_free_kib` KiB before the command runs)."""

    id: str
    argv: tuple[str, ...]
    code: int
    phrase: str
    setup: Callable[[Path], None] | None = None  # writes the bad input under {tmp} before the command runs
    absent: tuple[str, ...] = ()  # globs under {tmp} (or {disk}) that must match nothing afterwards
    disk_mib: int | None = None
    disk_free_kib: int = 0
    needs: tuple[str, ...] = ()  # paths under ../shared/assets the row reads
    env: dict[str, str] = field(default_factory=dict)  # added to the environment; values may hold the placeholders
    timeout: float = 600


def _write(relative: str, text: str | bytes) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        path = tmp / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())

    return setup


# --- rows: command line and budgets ------------------------------------------------------------------------------------

CLI_ROWS = [
    Row(
        "unknown-target",
        ("profile", "--model", "cifar:resnet20", "--target", "hots", "--out", "{tmp}/out"),
        2,
        "did you mean 'host'?",
    ),
    Row(
        "two-budgets",
        ("build", "--model", "cifar:resnet20", "--speedup", "2", "--latency-ms", "1", "--out", "{tmp}/out"),
        2,
        "exactly one budget",
        absent=("out",),
    ),
    Row(
        "qat-on-a-runtime-without-it",
        (
            "build",
            "--model",
            "cifar:resnet20",
            "--speedup",
            "1.5",
            "--data",
            "{assets}/datasets/cifar10_test_jpg/test",
            "--qat-epochs",
            "1",
            "--out",
            "{tmp}/out",
        ),
        2,
        "--qat-epochs",
        absent=("out/unpruned",),  # refused before the profile stage
        needs=("datasets/cifar10_test_jpg/test",),
    ),
    Row(
        "out-is-a-file",
        ("export", "--model", "cifar:resnet20", "--out", "{tmp}/file"),
        2,
        "is a file",
        setup=_write("file", "x"),
    ),
    *[
        Row(
            f"budget-{flag[2:]}-{value}",
            ("build", "--model", "cifar:resnet20", flag, value, "--out", "{tmp}/out"),
            2,
            f"budget {flag} ",
            absent=("out",),
        )  # refused before anything is loaded or written
        for flag in ("--speedup", "--latency-ms", "--energy-mj")
        for value in ("inf", "nan", "-1", "0")
    ],
    # the table predicts the fastest reachable model far slower: stopped at the plan stage, report written
    Row(
        "budget-ruled-out-by-the-table",
        (
            "build",
            "--model",
            "cifar:resnet20",
            "--speedup",
            "1000",
            "--threads",
            "1",
            "--runs",
            "30",
            "--lut-variants",
            "0",
            "--step",
            "16",
            "--out",
            "{tmp}/out",
        ),
        3,
        "the latency table predicts",
        absent=("out/plan/round*", "out/export", "out/verify", "out/bundle"),
    ),
]

# --- rows: model files --------------------------------------------------------------------------------------------------


def _saved(base: str, folder: str = "saved", *, plan_text: str | None = None, weights: bool = True,
           beside: dict[str, str] | None = None) -> Callable[[Path], None]:  # fmt: skip
    """Writes {tmp}/FOLDER, a saved pruned model whose plan names `base`, with files beside the plan ({tmp} filled
    in). The tensors file is empty: every row below is refused before it is read."""
    from edgeprune.models.saved import PLAN_FILE, WEIGHTS_FILE
    from edgeprune.types import PrunePlan

    def setup(tmp: Path) -> None:
        saved = tmp / folder
        saved.mkdir()
        plan = PrunePlan(base.replace("{tmp}", str(tmp)), "0" * 16, "l1", 0.3, None, False).to_json()
        (saved / PLAN_FILE).write_text(plan if plan_text is None else plan_text)
        if weights:
            (saved / WEIGHTS_FILE).write_bytes(b"")
        for name, text in (beside or {}).items():
            (saved / name).write_text(text.replace("{tmp}", str(tmp)))

    return setup


def _both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    return lambda tmp: [setup(tmp) for setup in setups] and None


_PAYLOAD = {"payload.py": "import pathlib\npathlib.Path('{tmp}/PAYLOAD_RAN').touch()\nmake = None\n"}
# an ultralytics model yaml: ultralytics eval()s `activation` and calls any name in its module namespace as a layer
_YOLO_YAML = (
    "nc: 2\nactivation: {act}\nbackbone:\n  - [-1, 1, {layer}, [16, 3, 2]]\nhead:\n  - [[0], 1, Detect, [nc]]\n"
)


def _yolo_yaml(act: str = "nn.SiLU()", layer: str = "Conv") -> Callable[[Path], None]:
    return lambda tmp: (tmp / "model.yaml").write_text(
        _YOLO_YAML.format(act=act, layer=layer).replace("{tmp}", str(tmp))
    )


def _cfg_row(row_id: str, body: str, phrase: str, net: str = "width=32\nheight=32\n") -> Row:
    """`export` of {tmp}/x.cfg: "[net]" on line 1, `net` from line 2, "channels=3", then `body`."""
    return Row(
        row_id,
        ("export", "--model", "{tmp}/x.cfg", "--out", "{tmp}/out"),
        2,
        phrase,
        setup=_write("x.cfg", f"[net]\n{net}channels=3\n{body}"),
        absent=("out/model.onnx",),
    )


MODEL_ROWS = [
    Row(
        "cfg-unknown-option",
        ("export", "--model", "{tmp}/bad.cfg", "--out", "{tmp}/out"),
        2,
        "line 3",
        setup=_write("bad.cfg", "[net]\nwidth=32\nheigth=32\nchannels=3\n"),
        absent=("out/model.onnx",),
    ),
    # absurd sizes: refused before allocating, against the memory this machine has available
    _cfg_row(
        "cfg-filters-too-many",
        "[convolutional]\nsize=9\npad=1\nfilters=2000000000\n",
        "line 8: [convolutional] (layer 0) needs",
    ),
    _cfg_row(
        "cfg-net-too-large",
        "[convolutional]\nfilters=4\n",
        "line 2: [net] input needs",
        net="width=100000\nheight=100000\n",
    ),
    _cfg_row(
        "cfg-connected-too-large",
        "[convolutional]\nfilters=4\n[connected]\noutput=2000000000\n",
        "line 8: [connected] (layer 1) needs",
    ),
    _cfg_row(
        "cfg-upsample-too-large",
        "[convolutional]\nfilters=4\n[upsample]\nstride=100000\n",
        "line 8: [upsample] (layer 1) needs",
    ),
    _cfg_row(
        "cfg-maxpool-too-large",
        "[convolutional]\nfilters=4\n[maxpool]\nsize=100000000\n",
        "line 8: [maxpool] (layer 1) needs",
    ),
    _cfg_row("cfg-filters-zero", "[convolutional]\nfilters=0\n", "line 6: [convolutional] filters=0 must be positive"),
    _cfg_row("cfg-filters-negative", "[convolutional]\nfilters=-8\n", "line 6: [convolutional] filters=-8 must be"),
    _cfg_row("cfg-size-zero", "[convolutional]\nsize=0\n", "line 6: [convolutional] size=0 must be positive"),
    _cfg_row("cfg-stride-negative", "[convolutional]\nstride=-2\n", "line 6: [convolutional] stride=-2 must be"),
    _cfg_row("cfg-padding-negative", "[convolutional]\nsize=3\npadding=-5\n", "line 7: [convolutional] padding=-5"),
    _cfg_row(
        "cfg-integer-overflow",
        "[convolutional]\nfilters=99999999999\n",
        "line 6: [convolutional] filters=99999999999 is outside the 32-bit",
    ),
    _cfg_row(
        "cfg-width-zero", "[convolutional]\n", "line 2: [net] width=0 must be positive", net="width=0\nheight=32\n"
    ),
    _cfg_row(
        "cfg-height-negative",
        "[convolutional]\n",
        "line 3: [net] height=-32 must be positive",
        net="width=32\nheight=-32\n",
    ),
    Row(
        "plan-python-base-needs-trust-code",
        ("export", "--model", "{tmp}/saved", "--out", "{tmp}/out"),
        2,
        "names python:payload:make as its base model, and loading it imports and runs that Python module; "
        "fix: pass --trust-code",
        setup=_saved("python:payload:make", beside=_PAYLOAD),
        absent=("PAYLOAD_RAN", "out"),
    ),
    Row(
        "plan-on-a-plan-python-base-needs-trust-code",
        ("profile", "--model", "edgeprune:{tmp}/outer", "--out", "{tmp}/out"),
        2,
        "pass --trust-code",
        setup=_both(_saved("python:payload:make", beside=_PAYLOAD), _saved("edgeprune:{tmp}/saved", "outer")),
        absent=("PAYLOAD_RAN",),
    ),
    Row(
        "plan-pickle-base-needs-trust-pickle",
        ("export", "--model", "{tmp}/saved", "--out", "{tmp}/out"),
        2,
        "is a pickle, and loading it runs code from the file; fix: pass --trust-pickle",
        setup=_saved("ultralytics:{tmp}/saved/model.pt", beside={"model.pt": "a pickle would run on load"}),
    ),
    Row(
        "plan-base-leads-back-to-itself",
        ("export", "--model", "{tmp}/saved", "--out", "{tmp}/out"),
        2,
        "leads back to",
        setup=_saved("edgeprune:{tmp}/saved"),
    ),
    Row(
        "plan-truncated",
        ("export", "--model", "{tmp}/saved", "--out", "{tmp}/out"),
        2,
        "is not valid JSON",
        setup=_saved("torchvision:resnet18", plan_text='{"schema_version": 1, "kind": "PrunePlan", "base_mo'),
    ),
    Row(
        "plan-not-a-plan",
        ("export", "--model", "{tmp}/saved", "--out", "{tmp}/out"),
        2,
        "is not a prune plan edgeprune can replay",
        setup=_saved("torchvision:resnet18", plan_text='{"base_model": 5}'),
    ),
    Row(
        "plan-without-its-tensors",
        ("export", "--model", "{tmp}/saved", "--out", "{tmp}/out"),
        2,
        "holds prune_plan.json but not model.safetensors",
        setup=_saved("torchvision:resnet18", weights=False),
    ),
    Row(
        "plan-tensors-truncated",
        ("export", "--model", "{tmp}/saved", "--out", "{tmp}/out"),
        2,
        "not a readable checkpoint",
        setup=_saved("torchvision:resnet18"),
    ),
    Row(
        "yaml-activation-runs-code",
        ("export", "--model", "{tmp}/model.yaml", "--out", "{tmp}/out"),
        2,
        "runs as Python code when it builds the model; fix: pass --trust-code",
        setup=_yolo_yaml(act="__import__('pathlib').Path('{tmp}/PWNED').touch() or nn.SiLU()"),
        absent=("PWNED",),
    ),
    Row(
        "yaml-layer-runs-code",
        ("export", "--model", "{tmp}/model.yaml", "--out", "{tmp}/out"),
        2,
        "names 'torch_safe_load' as a layer",
        setup=_yolo_yaml(layer="torch_safe_load"),
    ),
]

# --- rows: data ---------------------------------------------------------------------------------------------------------

YOLO_FASTEST = "darknet/yolo-fastest/yolo-fastest-1.1.cfg"
COCO8 = "datasets/coco8"
COCO_NAMES = "[" + ", ".join(f"c{i}" for i in range(80)) + "]"  # Yolo-Fastest predicts 80 classes
COCO8_YAML = "path: {root}\ntrain: images/val\nval: images/val\nnames: " + COCO_NAMES + "\n"


def _coco8(yaml_text: str = COCO8_YAML, *, labels: bool | str = True, first_label: str | None = None):
    """coco8's 4 val images copied to {tmp}/data with their labels (none if `labels` is false; if it is a string,
    every label file holds it), and {tmp}/data.yaml (`{root}` in `yaml_text` is that folder); `first_label`
    replaces the first image's label file."""

    def setup(tmp: Path) -> None:
        root = tmp / "data"
        shutil.copytree(ASSETS / COCO8 / "images" / "val", root / "images" / "val")
        if labels is not False:
            shutil.copytree(ASSETS / COCO8 / "labels" / "val", root / "labels" / "val")
        for label_file in (root / "labels" / "val").glob("*.txt") if isinstance(labels, str) else ():
            label_file.write_text(labels)
        if first_label is not None:
            (root / "labels" / "val" / "000000000036.txt").write_text(first_label)
        (tmp / "data.yaml").write_text(yaml_text.replace("{root}", str(root)))

    return setup


def _verify_detector(row_id: str, phrase: str, setup) -> Row:
    """`verify` of a random-init Yolo-Fastest on {tmp}/data.yaml: the data is refused before anything is exported."""
    argv = (
        "verify",
        "--model",
        "{assets}/" + YOLO_FASTEST,
        "--data",
        "{tmp}/data.yaml",
        "--limit",
        "2",
        "--out",
        "{tmp}/out",
    )
    return Row(row_id, argv, 2, phrase, setup=setup, absent=("out/model.onnx",), needs=(YOLO_FASTEST, COCO8))


BOX_OUTSIDE = "0 0.5 0.5 0.2 0.2\n0 1.5 0.5 0.2 0.2\n"

DATA_ROWS = [
    Row(
        "verify-data-missing",
        ("verify", "--model", "cifar:resnet20", "--data", "{tmp}/nowhere", "--out", "{tmp}/out"),
        2,
        "nowhere",
    ),
    _verify_detector("yaml-names-int", "'names' is 5 (int)", _coco8("path: {root}\nval: images/val\nnames: 5\n")),
    _verify_detector(
        "yaml-names-str-keys",
        "'names' has keys ['a', 'b']",
        _coco8("path: {root}\nval: images/val\nnames: {a: cat, b: dog}\n"),
    ),
    _verify_detector("yaml-path-number", "'path' is 5 (int)", _coco8("path: 5\nval: images/val\nnames: [a]\n")),
    _verify_detector(
        "yaml-split-number", "'val' holds 2017", _coco8("path: {root}\nval: 2017\nnames: " + COCO_NAMES + "\n")
    ),
    _verify_detector("yaml-nc-disagrees", "nc is 3 but 'names' has 80 classes", _coco8(COCO8_YAML + "nc: 3\n")),
    _verify_detector("split-without-labels", "has a label file", _coco8(labels=False)),
    _verify_detector("split-without-boxes", "hold no box", _coco8(labels="")),
    _verify_detector(
        "label-box-outside", "000000000036.txt line 2: coordinate 1.5 is outside 0..1", _coco8(first_label=BOX_OUTSIDE)
    ),
    _verify_detector(
        "label-wrong-field-count", "000000000036.txt line 1 has 4 values", _coco8(first_label="0 0.5 0.5 0.2\n")
    ),
    _verify_detector(
        "label-not-numbers", "000000000036.txt line 1 is not numbers", _coco8(first_label="person 0.5 0.5 0.2 0.2\n")
    ),
    _verify_detector(
        "label-class-outside-names",
        "000000000036.txt line 1: class 80 is not one of the 80 names",
        _coco8(first_label="80 0.5 0.5 0.2 0.2\n"),
    ),
    Row(
        "build-split-without-labels",
        (
            "build",
            "--model",
            "{assets}/" + YOLO_FASTEST,
            "--data",
            "{tmp}/data.yaml",
            "--speedup",
            "1.5",
            "--out",
            "{tmp}/out",
        ),
        2,
        "has a label file",
        setup=_coco8(labels=False),
        absent=("out/unpruned",),
        needs=(YOLO_FASTEST, COCO8),
    ),
    Row(
        "prune-finetune-box-outside",
        (
            "prune",
            "--model",
            "{assets}/" + YOLO_FASTEST,
            "--data",
            "{tmp}/data.yaml",
            "--ratio",
            "0.1",
            "--finetune-epochs",
            "1",
            "--out",
            "{tmp}/out",
        ),
        2,
        "000000000036.txt line 2: coordinate 1.5",
        setup=_coco8(first_label=BOX_OUTSIDE),
        absent=("out/prune_plan.json",),
        needs=(YOLO_FASTEST, COCO8),
    ),
]

# --- rows: verification gates -------------------------------------------------------------------------------------------

YOLO_FASTEST = "darknet/yolo-fastest/yolo-fastest-1.1"


def _nan_weights(tmp: Path) -> None:
    """Yolo-Fastest's .weights of the real size, every parameter NaN (header: version 0.2.5, 0 images seen)."""
    import struct

    parameters = ((ASSETS / f"{YOLO_FASTEST}.weights").stat().st_size - struct.calcsize("<3iQ")) // 4
    (tmp / "nan.weights").write_bytes(struct.pack("<3iQ", 0, 2, 5, 0) + struct.pack("<f", float("nan")) * parameters)


def _one_nan_onnx(tmp: Path) -> None:
    """resnet20's own ONNX export with one output element (sample 0, class 3) made NaN: PyTorch stays finite."""
    from tests.verify.nonfinite_onnx import with_one_nonfinite_output

    exported = run_cli("export", "--model", "cifar:resnet20", "--out", tmp / "export")
    assert exported.code == 0, exported.stderr[-2000:]
    with_one_nonfinite_output(tmp / "export" / "model.onnx", tmp / "nan.onnx")


_NAN_MODEL = ("--model", f"{{assets}}/{YOLO_FASTEST}.cfg", "--weights", "{tmp}/nan.weights")
_NAN_NEEDS = (f"{YOLO_FASTEST}.cfg", f"{YOLO_FASTEST}.weights", "datasets/yaml/coco128.yaml")
_FIRST_NAN_LAYER = "the first layer to produce them is blocks.0.conv (Conv2d)"

VERIFY_ROWS = [
    # NaN weights: verify fails its gate at the PyTorch check, naming the output, before anything is exported (it
    # used to print PASSED); export and build refuse the model (a user error: load finite weights)
    Row(
        "nan-weights-verify",
        ("verify", *_NAN_MODEL, "--data", "{assets}/datasets/yaml/coco128.yaml", "--out", "{tmp}/out"),
        3,
        "(output: 127500 of 127500 values NaN/Inf)",
        setup=_nan_weights,
        absent=("out/*.onnx", "out/verification.json"),
        needs=_NAN_NEEDS,
    ),
    Row(
        "nan-weights-export",
        ("export", *_NAN_MODEL, "--out", "{tmp}/out"),
        2,
        _FIRST_NAN_LAYER,
        setup=_nan_weights,
        absent=("out/*",),
        needs=_NAN_NEEDS,
    ),
    Row(
        "nan-weights-build",
        ("build", *_NAN_MODEL, "--speedup", "1.5", "--out", "{tmp}/out"),
        2,
        _FIRST_NAN_LAYER,
        setup=_nan_weights,
        absent=("out/**/*.onnx", "out/**/profile.json"),
        needs=_NAN_NEEDS,
    ),
    # PyTorch finite, one NaN in the runtime's output: the parity gate fails naming the output and the count
    Row(
        "runtime-one-nan",
        (
            "verify",
            "--model",
            "cifar:resnet20",
            "--data",
            "{assets}/datasets/cifar10_test_jpg/test",
            "--artifact",
            "{tmp}/nan.onnx",
            "--limit",
            "20",
            "--out",
            "{tmp}/out",
        ),
        3,
        "output 'output': 1 NaN/Inf value(s) from the runtime, 0 from PyTorch",
        setup=_one_nan_onnx,
        needs=("datasets/cifar10_test_jpg/test",),
    ),
]

# --- rows: full, read-only and over-quota disks -------------------------------------------------------------------------

# tmpfs counts whole 4 KiB pages: ResNet-20's model.onnx takes 1132 KiB, its artifact.json 4 and profile.json 8; with
# --step 64 its lut.json takes 12, and each latency-table cache entry about 0.5
RESNET20_PROFILED_KIB = 1132 + 4 + 8
PROFILE_LUT = (
    "profile",
    "--model",
    "cifar:resnet20",
    "--runs",
    "30",
    "--lut",
    "--lut-variants",
    "1",
    "--lut-calibration",
    "0",
    "--step",
    "64",
)
BUILD = (
    "build",
    "--model",
    "cifar:resnet20",
    "--speedup",
    "1.1",
    "--lut-variants",
    "0",
    "--runs",
    "30",
    "--step",
    "64",
)


def _read_only_disk(tmp: Path) -> None:
    remount_read_only(tmp / "disk")  # the `disk` fixture's tmpfs (chmod does not stop root)


def _export_full(fmt: str, phrase: str, absent: tuple[str, ...]) -> Row:
    """An export to a disk with room for half of ResNet-20 (2.2 MB fp32)."""
    argv = ("export", "--model", "cifar:resnet20", "--format", fmt, "--out", "{disk}/out")
    return Row(f"export-{fmt}-full-disk", argv, 2, phrase, absent=absent, disk_mib=2, disk_free_kib=600)


DISK_ROWS = [
    _export_full("onnx", "no space left on the disk writing", ("out/model.onnx", "out/artifact.json")),
    _export_full("openvino", "/disk/out/model.xml", ("out/model.*", "out/artifact.json")),
    _export_full("tflite", "(needs about 1.1 MB", ("out/model.tflite", "out/artifact.json")),  # refused up front
    Row(
        "export-read-only-disk",
        ("export", "--model", "cifar:resnet20", "--out", "{disk}/out"),
        2,
        "/disk/out: its filesystem is read-only; fix: point --out at a writable filesystem",
        setup=_read_only_disk,
        disk_mib=1,
        disk_free_kib=1024,
    ),
    Row(
        "prune-full-disk",
        ("prune", "--model", "cifar:resnet20", "--ratio", "0.3", "--out", "{disk}/out"),
        2,
        "/disk/out/model.safetensors (needs about",
        absent=("out/model.safetensors", "out/prune_plan.json"),
        disk_mib=2,
        disk_free_kib=300,
    ),  # the pruned ResNet-20 takes 503 kB
    # room for about the measured unpruned model, not for the table. Which file meets the full disk first moves by a
    # page with the length of the paths the records hold (a clone under a longer folder failed at another file than
    # here), so these rows ask for the disk error on --out, not for one file name
    Row(
        "profile-lut-full-disk",
        (*PROFILE_LUT, "--cache", "{tmp}/cache", "--out", "{disk}/out"),
        2,
        "no space left on the disk writing",
        absent=("out/lut.json",),
        disk_mib=2,
        disk_free_kib=RESNET20_PROFILED_KIB + 8,
    ),
    Row(
        "build-full-disk",
        (*BUILD, "--out", "{disk}/out"),
        2,
        "no space left on the disk writing",
        absent=("out/build.json", "out/lut.json"),
        env={"EDGEPRUNE_CACHE": "{tmp}/cache"},
        disk_mib=2,
        disk_free_kib=RESNET20_PROFILED_KIB + 2,
    ),
    # the latency-table cache fills up after a few entries; those stay readable (tests/latency/test_table.py)
    Row(
        "profile-lut-cache-full",
        (*PROFILE_LUT, "--cache", "{disk}/cache", "--out", "{tmp}/out"),
        2,
        "fix: free space there, or point EDGEPRUNE_CACHE (or profile --cache) at a disk with room",
        absent=("out/lut.json",),
        disk_mib=1,
        disk_free_kib=4,
    ),
    Row(
        "build-cache-full",
        (*BUILD, "--out", "{tmp}/out"),
        2,
        ".jsonl (needs about",
        absent=("out/lut.json",),
        env={"EDGEPRUNE_CACHE": "{disk}"},
        disk_mib=1,
        disk_free_kib=4,
    ),
]

# --- rows: devices and what a user is told to paste ---------------------------------------------------------------------

DEVICE_ROWS: list[Row] = [
    # ssh refuses the name; the command the user is told to try keeps it one quoted word (pasting it runs no `touch`)
    Row(
        "ssh-hostile-host-quoted-in-the-fix",
        (
            "profile",
            "--model",
            "cifar:resnet20",
            "--target",
            "raspberry-pi-4",
            "--runtime",
            "onnxruntime",
            "--host",
            "x;touch${{IFS}}pwned",
            "--out",
            "{tmp}/out",
        ),
        2,
        "`ssh 'x;touch${IFS}pwned' true`",
    ),
    # nothing listens on port 1: the failed agent start removes its scratch folder (it used to leak one per try)
    Row(
        "ssh-refused-leaves-no-scratch-folder",
        (
            "profile",
            "--model",
            "cifar:resnet20",
            "--target",
            "raspberry-pi-4",
            "--runtime",
            "onnxruntime",
            "--host",
            "127.0.0.1",
            "--port",
            "1",
            "--out",
            "{tmp}/out",
        ),
        2,
        "connection refused",
        absent=("scratch/edgeprune-*",),
        setup=lambda tmp: (tmp / "scratch").mkdir(),
        env={"TMPDIR": "{tmp}/scratch"},
    ),
]

ROWS = CLI_ROWS + MODEL_ROWS + DATA_ROWS + VERIFY_ROWS + DISK_ROWS + DEVICE_ROWS


@pytest.fixture
def disk(tmp_path, request):
    """A real tmpfs of the row's size, filled up to its last `disk_free_kib` KiB; unmounted afterwards."""
    row: Row = request.param
    if row.disk_mib is None:
        yield None
        return
    with small_tmpfs(tmp_path / "disk", row.disk_mib, row.disk_free_kib) as mount:
        yield mount


def _format(text: str, tmp: Path, disk: Path | None) -> str:
    return text.format(tmp=tmp, assets=ASSETS, disk=disk)


@pytest.mark.parametrize("disk", ROWS, ids=[r.id for r in ROWS], indirect=True)
def test_bad_input_is_one_line_with_its_exit_code_and_leaves_nothing_half_written(disk, tmp_path, request):
    row: Row = request.node.callspec.params["disk"]
    for relative in row.needs:
        if not (ASSETS / relative).exists():
            pytest.skip(f"needs ../shared/assets/{relative}")
    if row.setup:
        row.setup(tmp_path)
    argv = [_format(a, tmp_path, disk) for a in row.argv]
    env = {name: _format(value, tmp_path, disk) for name, value in row.env.items()}
    result = run_cli(*argv, timeout=row.timeout, env=env or None)
    stderr = result.stderr
    assert result.code == row.code, f"exit {result.code}, expected {row.code}:\n{stderr[-3000:]}"
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("edgeprune: ")]
    assert len(errors) == 1, f"expected one edgeprune: line, got {errors}"
    assert row.phrase in errors[0], f"{row.phrase!r} not in {errors[0]!r}"
    roots = [tmp_path] + ([disk] if disk else [])
    for pattern in row.absent:
        for root in roots:
            assert not list(root.glob(pattern)), f"{pattern} was left under {root}"
    for root in roots:
        half_written = [p for p in root.rglob("*") if p.name.endswith(".tmp")]
        assert not half_written, f"half-written files left behind: {half_written}"
