import numpy as np
import pytest

from edgeprune.errors import ConfigError
from edgeprune.verify.metrics import classification_metrics, topk_accuracy
from edgeprune.verify.parity import Tolerances, compare_output

TOL = Tolerances(max_abs=1e-4, max_abs_rel_range=1e-4, cosine=0.9999, metric=0.002, why="test")


def test_topk_on_hand_computed_cases():
    logits = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.1, 0.2, 0.7]])
    labels = np.array([1, 1, 0])
    assert topk_accuracy(logits, labels, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(logits, labels, 2) == pytest.approx(2 / 3)
    assert topk_accuracy(logits, labels, 3) == 1.0
    assert set(classification_metrics(logits, labels)) == {"top1"}
    assert set(classification_metrics(np.zeros((2, 10)), np.zeros(2, dtype=int))) == {"top1", "top5"}


def test_identical_outputs_pass():
    ref = np.random.default_rng(0).standard_normal((8, 10)).astype(np.float32)
    result = compare_output("y", ref, ref.copy(), TOL)
    assert result.passed and result.max_abs == 0 and result.cosine_min == pytest.approx(1.0)


def test_small_relative_error_on_large_outputs_passes():
    ref = np.random.default_rng(0).standard_normal((8, 10)) * 1e4
    result = compare_output("y", ref, ref + 1e-2, TOL)
    assert result.max_abs == pytest.approx(1e-2) and result.passed


def test_a_flipped_sample_fails_on_cosine_and_max_abs():
    ref = np.random.default_rng(0).standard_normal((8, 10))
    out = ref.copy()
    out[5] = -out[5]
    result = compare_output("y", ref, out, TOL)
    assert not result.passed and result.cosine_min == pytest.approx(-1.0)


def test_a_mean_cosine_tolerance_forgives_one_hard_sample_but_not_a_broken_model():
    from edgeprune.verify.parity import ParityAccumulator

    quantized = Tolerances(max_abs=np.inf, max_abs_rel_range=np.inf, cosine=0.95, cosine_of="mean", metric=0.01,
                           why="test")  # fmt: skip
    ref = np.random.default_rng(0).standard_normal((50, 10))
    out = ref.copy()
    out[5] = -out[5]  # one of 50 samples: mean cosine (49 - 1) / 50 = 0.96
    accumulator = ParityAccumulator("y")
    for batch in range(0, 50, 16):  # accumulated over batches as verification feeds it
        accumulator.update(ref[batch : batch + 16], out[batch : batch + 16])
    result = accumulator.result(quantized)
    assert result.cosine_min == pytest.approx(-1.0) and result.cosine_mean == pytest.approx(0.96)
    assert result.passed and result.cosine_of == "mean"
    assert not compare_output("y", ref, out, TOL).passed  # the same outputs judged on the worst sample
    assert not compare_output("y", ref, -ref, quantized).passed  # every sample wrong: mean cosine -1
    with pytest.raises(ValueError, match="cosine_of 'median': worst or mean"):
        Tolerances(max_abs=1, max_abs_rel_range=1, cosine=0.9, metric=0.01, why="test", cosine_of="median")


def test_shape_mismatch_is_a_user_error_naming_the_artifact():
    with pytest.raises(ConfigError, match="differs from PyTorch's"):
        compare_output("y", np.zeros((2, 3)), np.zeros((2, 4)), TOL)
