"""Stand-in `tensorrt` for an agent subprocess in tests, on machines without TensorRT or a GPU: the documented builder
API of tests/standins/tensorrt_builder.py (EDGEPRUNE_TRT_STANDIN_VERSION, default 10.3.0). After each build, what the
agent asked of the builder is written as JSON to EDGEPRUNE_TRT_STANDIN_LOG, for the test to check."""

import json
import os

from tests.standins.tensorrt_builder import fake_build_trt

_calls: dict = {}
_api = fake_build_trt(os.environ.get("EDGEPRUNE_TRT_STANDIN_VERSION", "10.3.0"), _calls)
globals().update(vars(_api))
_build = _api.Builder.build_serialized_network


def _build_and_log(self, network, config):
    plan = _build(self, network, config)
    log = {key: value for key, value in _calls.items() if isinstance(value, (str, int, list, dict))}
    log["float_layers"] = [layer.name for layer in network.layers if layer.precision is not None]
    log["inputs"] = {t.name: list(t.shape) for t in network.inputs}
    with open(os.environ["EDGEPRUNE_TRT_STANDIN_LOG"], "w") as handle:
        json.dump(log, handle)
    return plan


_api.Builder.build_serialized_network = _build_and_log
