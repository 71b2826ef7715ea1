"""`edgeprune train` stopped with Ctrl-C after its first epoch continues from its checkpoint when rerun with the
same --out, and ends with exactly the weights of an uninterrupted run; a device that is not here is one line."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import torch

from edgeprune.train.checkpoint import CHECKPOINT_FILE
from tests.train._cli import cifar_subset, edgeprune, environment, train_args, weights


def test_ctrl_c_after_epoch_1_of_3_then_a_rerun_ends_with_the_uninterrupted_weights(tmp_path):
    data = cifar_subset(tmp_path / "data", per_class=24)
    whole = edgeprune(train_args(data, tmp_path / "whole", 3))
    assert whole.returncode == 0, whole.stderr
    assert json.loads(whole.stdout)["epochs_run"] == 3
    assert not (tmp_path / "whole" / "checkpoints").exists()  # a finished run leaves no checkpoint behind

    out = tmp_path / "stopped"
    checkpoint = out / "checkpoints" / CHECKPOINT_FILE
    proc = subprocess.Popen([sys.executable, "-m", "edgeprune.cli", *train_args(data, out, 3)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment())  # fmt: skip
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)  # Ctrl-C, once epoch 1's checkpoint is there
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and checkpoint.exists()

    resumed = edgeprune(train_args(data, out, 3))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming fine-tuning after epoch 1 of 3" in resumed.stderr
    expected, got = weights(tmp_path / "whole"), weights(out)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[name], got[name]) for name in expected)


def test_a_device_that_is_not_here_is_one_line_and_exit_2(tmp_path):
    if torch.cuda.is_available():
        args = train_args(tmp_path, tmp_path / "out", 1)
        args[args.index("cpu")] = f"cuda:{torch.cuda.device_count()}"
    else:
        args = train_args(tmp_path, tmp_path / "out", 1)
        args[args.index("cpu")] = "cuda"
    proc = edgeprune(args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeprune: error: --device cuda")
