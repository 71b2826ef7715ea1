"""Building a TensorRT engine ON the device from ONNX (the agent's `build-engine` command, targets/agent.py): an
engine runs only with the TensorRT version and GPU that built it.

Python >= 3.6, standard library + numpy + TensorRT (+ a CUDA binding for int8 calibration from data). Request checks,
API-generation choices and engine-inspector parsing are plain functions here, testable without TensorRT.
"""

import json
import os
import threading
import time

from agent_runtimes import AgentError, first_line, import_runtime
from agent_trt_calibrator import (
    CalibrationBatches,
    CalibrationFeeder,
    calibration_kind,
    check_calibration_shape,
    default_calibration_batch,
    make_entropy_calibrator,
    write_file_atomically,
)
from agent_trt_cuda import open_cuda
from agent_trt_runner import TRT_HOW, trt_logger

# Builder API (TensorRT Python API, Core/Builder.html, BuilderConfig.html, Parsers/Onnx): trt.Builder(logger),
# builder.create_network(flags), trt.OnnxParser(network, logger).parse_from_file / parse, get_error(i)/num_errors,
# builder.create_builder_config(), config.set_flag(trt.BuilderFlag.FP16 | INT8), config.int8_calibrator,
# builder.create_optimization_profile() + profile.set_shape(name, min, opt, max) + config.add_optimization_profile,
# config.set_calibration_profile, builder.build_serialized_network(network, config) (8.0+; build_engine before, removed in
# 10.0), engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON) (8.2+, per-layer
# formats with config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED),
# config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS) (8.0+: 2:4 sparse weights on sparse tensor cores).

BUILD_PRECISIONS = ("fp32", "fp16", "int8")


def check_build_args(args):
    """The build-engine request checked and completed: {onnx, precision, out, workspace_bytes, calibration (None or
    {path, kind: npy_dir | npy_file | cache, cache, batch}), batch}."""
    onnx = args.get("onnx")
    if not onnx or not os.path.isfile(onnx):
        raise AgentError("ONNX file not found on the device: %s" % onnx)
    precision = args.get("precision") or "fp32"
    if precision not in BUILD_PRECISIONS:
        raise AgentError("precision %r is not one of %s" % (precision, ", ".join(BUILD_PRECISIONS)))
    out = args.get("out") or "%s.%s.engine" % (os.path.splitext(onnx)[0], precision)
    if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise AgentError("the engine's directory does not exist on the device: %s" % os.path.dirname(out))
    workspace_mb = args.get("workspace_mb")
    if workspace_mb is not None and (not isinstance(workspace_mb, int) or workspace_mb <= 0):
        raise AgentError("workspace_mb must be a positive integer (MiB), got %r" % (workspace_mb,))
    batch = args.get("batch") or 1
    if not isinstance(batch, int) or batch < 1:
        raise AgentError("batch must be a positive integer, got %r" % (batch,))
    calibration = args.get("calibration")
    if precision != "int8":
        if calibration:
            raise AgentError("calibration applies to int8 builds only (precision is %s)" % precision)
        calibration = None
    else:
        if not calibration:
            raise AgentError(
                "an int8 build needs calibration: a directory of .npy batches, an .npy file of samples, "
                "or the calibration cache of an earlier build"
            )
        kind = calibration_kind(calibration)
        calibration_batch = args.get("calibration_batch")  # None: the network's fixed batch, else 8
        if calibration_batch is not None and (not isinstance(calibration_batch, int) or calibration_batch < 1):
            raise AgentError("calibration_batch must be a positive integer, got %r" % (calibration_batch,))
        cache = calibration if kind == "cache" else (args.get("calibration_cache") or out + ".calib")
        calibration = {"path": calibration, "kind": kind, "cache": cache, "batch": calibration_batch}
    float_layers = args.get("float_layers") or []
    if float_layers and precision == "fp32":
        raise AgentError("float_layers keeps layers of an fp16/int8 build in fp32; this build is fp32 already")
    if not isinstance(float_layers, list) or not all(isinstance(n, str) and n for n in float_layers):
        raise AgentError("float_layers must be a list of layer names (the ONNX node names), got %r" % (float_layers,))
    sparse_weights = args.get("sparse_weights", False)
    if not isinstance(sparse_weights, bool):
        raise AgentError("sparse_weights must be true or false, got %r" % (sparse_weights,))
    return {
        "onnx": onnx,
        "precision": precision,
        "out": out,
        "batch": batch,
        "calibration": calibration,
        "workspace_bytes": None if workspace_mb is None else workspace_mb << 20,
        "float_layers": float_layers,
        "sparse_weights": sparse_weights,
    }


def trt_major(version):
    """8 for "8.2.1.8", 10 for "10.3.0"."""
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        raise AgentError(
            "the installed TensorRT reports an unreadable version %r" % (version,), "missing_runtime"
        ) from None


def trt_network_flags(trt):
    """create_network's flags: 1 << EXPLICIT_BATCH, which ONNX needs in TensorRT 7/8; TensorRT 10 has only explicit
    batch and deprecated the flag, so 0 there."""
    flag = getattr(getattr(trt, "NetworkDefinitionCreationFlag", None), "EXPLICIT_BATCH", None)
    if flag is None or trt_major(trt.__version__) >= 10:
        return 0
    return 1 << int(flag)


def trt_set_workspace(trt, builder, config, nbytes):
    """Cap the builder's scratch memory; returns which API did it. config.set_memory_pool_limit(MemoryPoolType.WORKSPACE)
    exists since 8.4 and is the only one in 10.x; config.max_workspace_size before (deprecated 8.4, removed 10.0);
    builder.max_workspace_size in the implicit-batch era (removed 8.0)."""
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, nbytes)
        return "config.set_memory_pool_limit"
    if hasattr(config, "max_workspace_size"):
        config.max_workspace_size = nbytes
        return "config.max_workspace_size"
    builder.max_workspace_size = nbytes
    return "builder.max_workspace_size"


def trt_serialize(builder, network, config):
    """The serialized engine (bytes-like), or None when the build failed."""
    if hasattr(builder, "build_serialized_network"):  # 8.0+, the only way in 10.x
        return builder.build_serialized_network(network, config)
    engine = builder.build_engine(network, config)  # 7.x
    return None if engine is None else engine.serialize()


def trt_keep_float(trt, network, config, names):
    """Mixed precision: the named network layers (the ONNX parser names them after their ONNX nodes) compute and
    output fp32 (ILayer.precision, set_output_type), and the builder must obey it: BuilderFlag.OBEY_PRECISION_CONSTRAINTS
    (8.2+), STRICT_TYPES before (removed in 10.0). Returns the flag used; an unknown name is an error."""
    wanted, found = set(names), set()
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.name in wanted:
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
            found.add(layer.name)
    missing = sorted(wanted - found)
    if missing:
        raise AgentError(
            "float_layers not in the network: %s (TensorRT names layers after the ONNX nodes)" % ", ".join(missing[:5])
        )
    flag = "OBEY_PRECISION_CONSTRAINTS" if hasattr(trt.BuilderFlag, "OBEY_PRECISION_CONSTRAINTS") else "STRICT_TYPES"
    config.set_flag(getattr(trt.BuilderFlag, flag))
    return flag


def trt_allow_sparse_weights(trt, config):
    """Let the builder pick sparse tactics for layers whose weights hold the 2:4 pattern (2 of every 4 consecutive
    input-channel weights zero): BuilderFlag.SPARSE_WEIGHTS, TensorRT 8.0+; only GPUs with sparse tensor cores
    (Ampere, Orin and newer) have such tactics. Returns None when set, else the note that the engine stays dense:
    TensorRT before 8.0 has no flag (nor sparse kernels), so it builds the same engine it would without the ask."""
    flag = getattr(trt.BuilderFlag, "SPARSE_WEIGHTS", None)
    if flag is None:
        return "TensorRT %s has no BuilderFlag.SPARSE_WEIGHTS (8.0+): the 2:4 weights run dense" % trt.__version__
    config.set_flag(flag)
    return None


def _fixed_profile(builder, shapes, batch):
    profile = builder.create_optimization_profile()
    for name, shape in shapes.items():
        fixed = fixed_shape(shape, batch)
        profile.set_shape(name, fixed, fixed, fixed)
    return profile


def fixed_shape(shape, batch):
    """A dynamic input's build shape: a dynamic first axis becomes `batch`; any other dynamic axis is an error."""
    if any(d < 0 for d in shape[1:]):
        raise AgentError(
            "input shape %s has dynamic dimensions besides the batch; export the ONNX with fixed ones" % list(shape)
        )
    return [batch if (i == 0 and d < 0) else d for i, d in enumerate(shape)]


_FORMAT_PRECISIONS = (
    ("int8", "int8"),
    ("fp16", "fp16"),
    ("half", "fp16"),
    ("bf16", "bf16"),
    ("fp8", "fp8"),
    ("fp32", "fp32"),
    ("float", "fp32"),
    ("int32", "int32"),
    ("int64", "int64"),
    ("bool", "bool"),
)


def format_precision(text):
    """The data type in an engine inspector "Format/Datatype" ("Row major linear FP32 format", "Thirty-two wide
    channel vectorized row major Int8 format.", "Half", "Float"); None when it names none ("N/A due to dynamic shapes")."""
    words = text.lower().replace(".", " ").split()
    for token, precision in _FORMAT_PRECISIONS:
        if token in words:
            return precision
    return None


def trt_layer_precisions(info_json):
    """[{name, type, precision}] from the engine inspector's JSON; precision is the output tensors' data type(s)
    ("fp16", "int8", "fp16+fp32"), None where the inspector did not say (engines built without DETAILED verbosity list
    layer names only)."""
    layers = json.loads(info_json).get("Layers", [])
    found = []
    for layer in layers:
        if not isinstance(layer, dict):
            found.append({"name": str(layer), "type": None, "precision": None})
            continue
        precisions = sorted(
            {
                p
                for p in (
                    format_precision(str(t.get("Format/Datatype", "")))
                    for t in layer.get("Outputs", [])
                    if isinstance(t, dict)
                )
                if p
            }
        )
        found.append(
            {"name": layer.get("Name"), "type": layer.get("LayerType"), "precision": "+".join(precisions) or None}
        )
    return found


def build_engine(args, heartbeat=None):
    """build-engine: ONNX -> serialized TensorRT engine at `out`, built by this device's TensorRT."""
    spec = check_build_args(args)
    calibration, batches = spec["calibration"], None
    trt = import_runtime("tensorrt", TRT_HOW)
    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(trt_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if hasattr(parser, "parse_from_file"):  # resolves external weight files beside the .onnx
        parsed = parser.parse_from_file(spec["onnx"])
    else:
        with open(spec["onnx"], "rb") as handle:
            parsed = parser.parse(handle.read())
    if not parsed:
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise AgentError("TensorRT's ONNX parser rejected %s: %s" % (spec["onnx"], "; ".join(errors)[:600]))
    config = builder.create_builder_config()
    workspace_api = None
    if spec["workspace_bytes"] is not None:
        workspace_api = trt_set_workspace(trt, builder, config, spec["workspace_bytes"])
    verbosity = getattr(trt, "ProfilingVerbosity", None)
    if verbosity is not None and hasattr(verbosity, "DETAILED"):
        config.profiling_verbosity = verbosity.DETAILED
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    shapes = {t.name: [int(d) for d in t.shape] for t in inputs}
    if calibration is not None and calibration["kind"] != "cache":
        batches = CalibrationBatches(
            calibration["path"],
            calibration["kind"],
            calibration["batch"] or default_calibration_batch(list(shapes.values())),
        )
        for shape in shapes.values():
            check_calibration_shape(shape, batches.shape)
    if any(d < 0 for shape in shapes.values() for d in shape):
        config.add_optimization_profile(_fixed_profile(builder, shapes, spec["batch"]))
        if batches is not None and hasattr(config, "set_calibration_profile"):
            config.set_calibration_profile(_fixed_profile(builder, shapes, batches.batch_size))
    notes = []
    if spec["precision"] == "fp16":
        if not builder.platform_has_fast_fp16:
            notes.append("this GPU has no fast fp16; TensorRT may keep layers in fp32")
        config.set_flag(trt.BuilderFlag.FP16)
    feeder = None
    if spec["precision"] == "int8":
        if not builder.platform_has_fast_int8:
            notes.append("this GPU has no fast int8; TensorRT may keep layers in higher precision")
        feeder = CalibrationFeeder(
            batches,
            open_cuda() if batches is not None else None,
            calibration["cache"],
            read_cache=calibration["kind"] == "cache",
        )
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = make_entropy_calibrator(trt, feeder)
    precision_flag = trt_keep_float(trt, network, config, spec["float_layers"]) if spec["float_layers"] else None
    sparse_note = trt_allow_sparse_weights(trt, config) if spec["sparse_weights"] else None
    if sparse_note:
        notes.append(sparse_note)
    started = time.perf_counter()
    stop = _heartbeat(heartbeat)
    try:
        plan = trt_serialize(builder, network, config)
    finally:
        stop()
    build_s = time.perf_counter() - started
    if feeder is not None and feeder.error is not None:
        raise AgentError("int8 calibration failed: %s" % first_line(feeder.error))
    if plan is None:
        raise AgentError(
            "TensorRT could not build the engine: %s"
            % ("; ".join(logger.errors[-3:]) or "see the agent's stderr for TensorRT's log")
        )
    write_file_atomically(spec["out"], bytes(memoryview(plan)))
    result = {
        "engine": spec["out"],
        "tensorrt_version": trt.__version__,
        "build_s": build_s,
        "precision": spec["precision"],
        "workspace_api": workspace_api,
        "input_shapes": shapes,
        "notes": notes,
        "calibration": None,
        "layers": None,
        "layers_note": None,
        "float_layers": spec["float_layers"],
        "precision_flag": precision_flag,
        "sparse_weights": spec["sparse_weights"] and sparse_note is None,
    }
    if feeder is not None:
        result["calibration"] = {
            "kind": calibration["kind"],
            "cache": calibration["cache"],
            "batches": feeder.given,
            "batch_size": feeder.batch_size,
        }
    engine = trt.Runtime(logger).deserialize_cuda_engine(bytes(memoryview(plan)))
    if engine is not None and hasattr(engine, "create_engine_inspector"):
        info = engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)
        result["layers"] = trt_layer_precisions(info)
    else:
        result["layers_note"] = "TensorRT %s has no engine inspector (8.2+)" % trt.__version__
    return result


def _heartbeat(beat, every_s=20.0):
    """Call beat(elapsed_s) every `every_s` on a thread until the returned stop() is called; a long build then still
    shows the host it is alive."""
    if beat is None:
        return lambda: None
    done, started = threading.Event(), time.perf_counter()

    def loop():
        while not done.wait(every_s):
            beat(int(time.perf_counter() - started))

    thread = threading.Thread(target=loop)
    thread.daemon = True
    thread.start()

    def stop():
        done.set()
        thread.join(timeout=5)

    return stop
