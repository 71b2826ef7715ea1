"""TensorRT's builder API as its documentation describes it, per generation, for machines without TensorRT.

Sources: docs.nvidia.com/deeplearning/tensorrt Python API reference (Core/Builder, BuilderConfig, Parsers/Onnx,
Int8/EntropyCalibrator2, ILayer precision and set_output_type) and the 8.x -> 10.x migration guide. A call that
exists only in the other generation is absent, so code that uses it fails with AttributeError as it would there.
"""

from __future__ import annotations

import json
from types import SimpleNamespace


def fake_build_trt(version, calls, parse_ok=True):
    """TensorRT's builder API as the docs describe it, per generation (10.x: set_memory_pool_limit; 8.2: the
    config's max_workspace_size), recording what edgeprune asked for. Calibration runs the calibrator like the
    builder does: read the cache, else get_batch until None, then write the cache."""
    ten = int(version.split(".")[0]) >= 10
    major_minor = tuple(int(p) for p in version.split(".")[:2])
    # OBEY_PRECISION_CONSTRAINTS since 8.2; STRICT_TYPES before it, removed in 10.0
    precision_flag = {"OBEY_PRECISION_CONSTRAINTS": "OBEY"} if major_minor >= (8, 2) else {"STRICT_TYPES": "STRICT"}
    # SPARSE_WEIGHTS (2:4 structured sparsity on sparse tensor cores) since 8.0, still in 10.x
    sparse_flag = {"SPARSE_WEIGHTS": "SPARSE"} if major_minor >= (8, 0) else {}

    class Severity:
        WARNING, ERROR, INTERNAL_ERROR = "W", "E", "IE"

    class Logger(Severity):
        def __init__(self, severity=None):
            pass

    class Base:
        def __init__(self):
            pass

    class Config:
        int8_calibrator, profiling_verbosity = None, None

        def set_flag(self, flag):
            calls.setdefault("flags", []).append(flag)

        def add_optimization_profile(self, profile):
            calls["profile"] = profile.shapes

        def set_calibration_profile(self, profile):
            calls["calibration_profile"] = profile.shapes

    if ten:
        Config.set_memory_pool_limit = lambda self, kind, n: calls.update(workspace=(kind, n))
    else:
        Config.max_workspace_size = 0

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            self.shapes[name] = (list(lo), list(opt), list(hi))

    class Layer:
        num_outputs = 1

        def __init__(self, name):
            self.name, self.precision, self.output_types = name, None, {}

        def set_output_type(self, index, dtype):
            self.output_types[index] = dtype

    class Network:
        def __init__(self):
            self.inputs = [SimpleNamespace(name="x", shape=(-1, 3, 4, 4))]
            self.layers = [Layer("/conv1/Conv"), Layer("/relu/Relu"), Layer("/fc/Gemm")]

        num_inputs = property(lambda self: len(self.inputs))
        num_layers = property(lambda self: len(self.layers))

        def get_input(self, i):
            return self.inputs[i]

        def get_layer(self, i):
            return self.layers[i]

    class Builder:
        platform_has_fast_fp16 = platform_has_fast_int8 = True

        def __init__(self, logger):
            calls["logger_is_ilogger"] = isinstance(logger, Base)

        def create_network(self, flags):
            calls["network_flags"] = flags
            calls["network"] = Network()
            return calls["network"]

        def create_builder_config(self):
            calls["config"] = Config()
            return calls["config"]

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            if config.int8_calibrator is not None:
                calibrator = config.int8_calibrator
                calls["calibrator_batch_size"] = calibrator.get_batch_size()
                if not calibrator.read_calibration_cache():
                    calls["batches_fed"] = 0
                    while calibrator.get_batch(["x"]) is not None:
                        calls["batches_fed"] += 1
                    calibrator.write_calibration_cache(b"calibration table")
            return b"serialized plan"

    class Parser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, network, logger):
            self.network = network

        def parse_from_file(self, path):
            calls["parsed"] = path
            if parse_ok:
                _read_onnx(path, self.network, Layer)
            return parse_ok

        def get_error(self, i):
            return "In node 3 (Foo): UNSUPPORTED_NODE"

    class Inspector:
        def get_engine_information(self, fmt):
            return json.dumps(
                {
                    "Layers": [
                        {
                            "Name": "conv",
                            "LayerType": "CaskConvolution",
                            "Outputs": [{"Format/Datatype": "Row major linear FP16 format"}],
                        }
                    ]
                }
            )

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, plan):
            calls["deserialized"] = plan
            return SimpleNamespace(create_engine_inspector=Inspector)

    return SimpleNamespace(
        __version__=version,
        Logger=Logger,
        ILogger=Base,
        IInt8EntropyCalibrator2=Base,
        Builder=Builder,
        OnnxParser=Parser,
        Runtime=Runtime,
        NetworkDefinitionCreationFlag=SimpleNamespace(EXPLICIT_BATCH=0),
        BuilderFlag=SimpleNamespace(FP16="FP16", INT8="INT8", **precision_flag, **sparse_flag),
        float32="float32",
        MemoryPoolType=SimpleNamespace(WORKSPACE="WORKSPACE"),
        ProfilingVerbosity=SimpleNamespace(DETAILED="DETAILED"),
        LayerInformationFormat=SimpleNamespace(JSON="JSON"),
    )


def _read_onnx(path, network, layer_class) -> None:
    """A real ONNX file's inputs (a named or unknown dimension is -1, as TensorRT reports it) and nodes become the
    network's; the ONNX parser names each layer after its node. Other files keep the default network."""
    try:
        import onnx

        graph = onnx.load(path, load_external_data=False).graph
    except Exception:  # not an ONNX file: the unit tests parse placeholder bytes
        return
    weights = {init.name for init in graph.initializer}
    network.inputs = [SimpleNamespace(name=v.name, shape=tuple(d.dim_value if d.HasField("dim_value") else -1
                                                                 for d in v.type.tensor_type.shape.dim))
                      for v in graph.input if v.name not in weights]  # fmt: skip
    network.layers = [layer_class(node.name) for node in graph.node]
