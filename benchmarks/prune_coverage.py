"""Coverage sweep (not run in CI): 30 % channel pruning (l1) of every torchvision classification model.

For each model of `torchvision.models.list_models(module=torchvision.models)` (random init, offline; batch-norm
statistics recalibrated on three random batches, since several random-init models otherwise output constants, and
an all-zero linear layer — ViT's classifier — drawn from N(0, 0.02²) for the same reason):
prune 30 % of the channels with `prune_channels`, run a forward pass, export with the ONNX Runtime backend and
compare ONNX Runtime with PyTorch on two random inputs (the backend's tolerances). Where the network has only
batch norms (no LayerNorm/GroupNorm, which mix channels), it also checks that the pruned model computes what
the unpruned one computes with the removed channels zeroed (tests/prune/masking.py): wrong wiring through a
concatenation or split would show there, and not in the runtime parity. Last, it saves the pruned model with
`save_pruned` and reloads that folder in a fresh process, as `--model DIR` does, and compares the reloaded model's
outputs with the pruned model's (`reload_max_abs`; a reload passes at ≤ RELOAD_TOLERANCE of the output range,
and is expected to be bit-identical: same tensors, same ops, same thread count).

Each model runs in its own subprocess, so a crash or an out-of-memory kill in one is a failure of that model
only. Prints "N passed / N tried" and one line per failure; `--json FILE` writes every result.

    python benchmarks/prune_coverage.py [--max-params 150e6] [--skip vit_h_14,...] [--only resnet18,...]
                                        [--json FILE [--resume]]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RELOAD_TOLERANCE = 1e-6  # of the output's range


def check_one(name: str) -> dict:
    """Prune, run, export and compare one model; the result as a JSON-able dict."""
    sys.path.insert(0, str(REPO))
    import torch

    from edgeprune.backends.onnxruntime import OnnxRuntimeBackend
    from edgeprune.models import load_model
    from edgeprune.models.saved import save_pruned
    from edgeprune.prune.channels import prune_channels
    from edgeprune.verify.parity import compare_output
    from tests.models.test_ultralytics import _recalibrate_bn as recalibrate_bn
    from tests.prune.masking import masked_copy, relative_error, rewritten_copy

    model = load_model(f"torchvision:{name}")
    recalibrate_bn(model.module, model.inputs[0].shape[-1])
    generator = torch.Generator().manual_seed(0)
    for layer in model.module.modules():  # torchvision zero-inits ViT's classifier: its output would be constant
        if isinstance(layer, torch.nn.Linear) and not layer.weight.any():
            torch.nn.init.normal_(layer.weight, std=0.02, generator=generator)
    mixes_channels = any(isinstance(m, (torch.nn.LayerNorm, torch.nn.GroupNorm)) for m in model.module.modules())
    unpruned = None if mixes_channels else rewritten_copy(model)
    plan = prune_channels(model, 0.3, "l1")
    result = {
        "params_before": plan.params_before,
        "params_after": plan.params_after,
        "macs_before": plan.macs_before,
        "macs_after": plan.macs_after,
        "rewrites": list(plan.rewrites),
    }
    x = torch.rand(2, *model.inputs[0].shape[1:], generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        reference = model.module(x)
    result["exact"] = None
    if unpruned is not None:
        with torch.no_grad():
            result["exact"] = relative_error(reference, masked_copy(unpruned, plan.channel_history)(x))
        del unpruned
    backend = OnnxRuntimeBackend()
    with tempfile.TemporaryDirectory() as out:
        artifact = backend.export(model, Path(out))
        import onnxruntime as ort

        session = ort.InferenceSession(str(artifact.path), providers=["CPUExecutionProvider"])
        runtime = session.run(None, {artifact.inputs[0].name: x.numpy()})[0]
    parity = compare_output("output", reference.numpy(), runtime, backend.tolerances("fp32"))
    result.update(parity_rel=parity.max_abs_rel_range, parity_cosine=parity.cosine_min)
    with tempfile.TemporaryDirectory() as work:
        save_pruned(model, plan, Path(work) / "pruned")
        del model  # the fresh process builds the model again: hold one copy at a time
        result.update(_reload_in_fresh_process(Path(work), x.numpy(), reference.numpy()))
    problems = []
    if float(reference.max() - reference.min()) == 0:
        problems.append("the output is constant, so the checks prove nothing")
    if not plan.params_after < plan.params_before:
        problems.append("no parameters removed")
    if not parity:
        problems.append(f"ONNX Runtime parity failed (max-abs/range {parity.max_abs_rel_range:.2e}, "
                        f"cosine {parity.cosine_min:.6f})")  # fmt: skip
    if result["exact"] is not None and result["exact"] > 1e-4:
        problems.append(f"pruned model differs from the masked one by {result['exact']:.2e} of the range")
    if result["reload"] != "passed":
        problems.append(f"reload from the saved folder: {result['reload_reason']}")
    result["status"] = "failed" if problems else "passed"
    result["reason"] = "; ".join(problems)
    return result


def _reload_in_fresh_process(work: Path, x, reference) -> dict:
    """Reload `work/pruned` in a new interpreter (as `--model DIR`) and compare its outputs on `x` with `reference`."""
    import numpy as np

    np.save(work / "x.npy", x)
    proc = subprocess.run([sys.executable, __file__, "--reload", str(work)], capture_output=True, text=True,
                          cwd=REPO, timeout=1200)  # fmt: skip
    if proc.returncode != 0:
        return {
            "reload": "failed",
            "reload_max_abs": None,
            "reload_reason": _failure_reason(proc.returncode, proc.stderr),
        }
    reloaded = np.load(work / "reloaded.npy")
    if reloaded.shape != reference.shape:
        return {"reload": "failed", "reload_max_abs": None,
                "reload_reason": f"output shape {reloaded.shape}, pruned model's {reference.shape}"}  # fmt: skip
    max_abs = float(np.abs(reloaded.astype(np.float64) - reference).max())
    allowed = RELOAD_TOLERANCE * float(reference.max() - reference.min())
    return {
        "reload": "passed" if max_abs <= allowed else "failed",
        "reload_max_abs": max_abs,
        "reload_identical": bool(np.array_equal(reloaded, reference)),
        "reload_reason": "" if max_abs <= allowed else f"outputs differ by {max_abs:.2e} (allowed {allowed:.2e})",
    }


def reload_one(work: Path) -> None:
    """The fresh process of `_reload_in_fresh_process`: load the saved folder as `--model DIR` does, run `x`."""
    sys.path.insert(0, str(REPO))
    import numpy as np
    import torch

    from edgeprune.models import load_model

    model = load_model(str(work / "pruned"))
    with torch.inference_mode():
        np.save(work / "reloaded.npy", model.module(torch.from_numpy(np.load(work / "x.npy"))).numpy())


def _run_isolated(name: str, timeout: float) -> dict:
    start = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True,
                              timeout=timeout, cwd=REPO)  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"status": "failed", "reason": f"timed out after {timeout:.0f} s", "seconds": timeout}
    seconds = time.monotonic() - start
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        return {**json.loads(lines[-1]), "seconds": seconds}
    return {"status": "failed", "reason": _failure_reason(proc.returncode, proc.stderr), "seconds": seconds}


def _failure_reason(returncode: int, stderr: str) -> str:
    """The exception line of the last traceback (not a warning printed after it), or how the process died."""
    if returncode < 0:
        return f"killed by signal {-returncode} (out of memory?)"
    tail = stderr.rsplit("Traceback (most recent call last):", 1)
    if len(tail) == 2:
        raised = [line for line in tail[1].splitlines() if line.strip() and not line.startswith((" ", "\t"))]
        if raised:
            return raised[0][:300]
    return f"exit status {returncode}, no traceback"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--reload", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--only", default="", help="comma-separated model names (default: all)")
    parser.add_argument("--skip", default="", help="comma-separated model names to leave out")
    parser.add_argument("--max-params", type=float, default=None, help="leave out models with more parameters")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per model")
    parser.add_argument("--json", type=Path, help="write every result to this file")
    parser.add_argument("--resume", action="store_true", help="keep the results already in --json; run the rest")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(check_one(args.one)))
        return
    if args.reload:
        reload_one(args.reload)
        return

    from torchvision import models

    names = models.list_models(module=models)
    skip = set(filter(None, args.skip.split(",")))
    only = set(filter(None, args.only.split(",")))
    results: dict[str, dict] = json.loads(args.json.read_text()) if args.resume and args.json.exists() else {}
    for name in names:
        done = results.get(name, {})
        if done.get("status") not in (None, "skipped") and not (done["status"] == "passed" and "reload" not in done):
            continue  # a pass recorded before the sweep reloaded its models runs again
        params = models.get_model_weights(name).DEFAULT.meta.get("num_params", 0)
        if (only and name not in only) or name in skip:
            continue
        if args.max_params is not None and params > args.max_params:
            results[name] = {"status": "skipped", "reason": f"{params / 1e6:.0f} M parameters > --max-params"}
        else:
            results[name] = _run_isolated(name, args.timeout)
        r = results[name]
        exact = "n/a" if r.get("exact") is None else f"{r['exact']:.1e}"
        detail = (
            f"params {r['params_before'] / 1e6:.2f}M -> {r['params_after'] / 1e6:.2f}M, "
            f"parity {r['parity_rel']:.1e}, exact {exact}"
            if "params_before" in r
            else r.get("reason", "")
        )
        if "reload" in r:
            detail += f", reload {r['reload']} (max |diff| {r['reload_max_abs']})"
        if r["status"] == "failed" and "params_before" in r:
            detail += f"; {r['reason']}"
        print(f"{name:28s} {r['status']:7s} {r.get('seconds', 0):6.0f} s  {detail}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    tried = [n for n, r in results.items() if r["status"] != "skipped"]
    passed = [n for n in tried if results[n]["status"] == "passed"]
    reloaded = [n for n in tried if results[n].get("reload") == "passed"]
    identical = [n for n in reloaded if results[n].get("reload_identical")]
    print(
        f"\n{len(passed)} passed / {len(tried)} tried ({len(results) - len(tried)} skipped); "
        f"{len(reloaded)} reloaded in a fresh process with the same outputs ({len(identical)} bit-identical)"
    )
    for name in tried:
        if results[name]["status"] != "passed":
            print(f"  FAILED {name}: {results[name]['reason']}")


if __name__ == "__main__":
    main()
