"""An ONNX file that differs from its model in exactly one way: one element of its first output is NaN (or +Inf).

Built from the model's own export, so PyTorch stays finite and only the runtime's output carries the bad value: the
case the parity gate must catch on the runtime's side.
"""

from __future__ import annotations

from pathlib import Path


def with_one_nonfinite_output(source: Path, destination: Path, value: float = float("nan"), column: int = 3) -> str:
    """Write `source` with `value` scattered into element [0, ..., 0, column] of its first output (the first sample
    of every run call) to `destination`; returns that output's name."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    output = graph.output[0].name
    rank = len(graph.output[0].type.tensor_type.shape.dim)
    before = f"{output}_before_nonfinite"
    for node in graph.node:
        node.output[:] = [before if name == output else name for name in node.output]
    index = np.zeros((1, rank), dtype=np.int64)
    index[0, -1] = column
    graph.initializer.extend(
        [
            numpy_helper.from_array(index, "nonfinite_index"),
            numpy_helper.from_array(np.array([value], dtype=np.float32), "nonfinite_value"),
        ]
    )
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])
    graph.node.extend(
        [
            helper.make_node("Shape", [before], ["nonfinite_shape"]),
            helper.make_node("ConstantOfShape", ["nonfinite_shape"], ["nonfinite_zeros"], value=zero),
            helper.make_node(
                "ScatterND", ["nonfinite_zeros", "nonfinite_index", "nonfinite_value"], ["nonfinite_mask"]
            ),
            helper.make_node("Add", [before, "nonfinite_mask"], [output]),  # x + 0 = x everywhere else
        ]
    )
    onnx.checker.check_model(model)
    destination.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(destination))
    return output
