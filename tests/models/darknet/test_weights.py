import numpy as np
import pytest
import torch

from edgeprune.errors import ModelError
from edgeprune.models import LoadOptions
from edgeprune.models.darknet import WeightsHeader, load, parse_cfg, write_cfg, write_weights
from tests.conftest import asset

HEADER_BYTES = 20  # three int32 and an int64 `seen` for version 0.2.x
FASTEST_FLOATS = 346_062


@pytest.fixture(scope="module")
def fastest():
    cfg = asset("darknet/yolo-fastest/yolo-fastest-1.1.cfg")
    weights = asset("darknet/yolo-fastest/yolo-fastest-1.1.weights")
    return cfg, weights, load(str(cfg), LoadOptions(weights=str(weights)))


def test_yolo_fastest_weights_round_trip_byte_for_byte(fastest, tmp_path):
    cfg, weights, loaded = fastest
    header = loaded.module.weights_header
    assert (header.major, header.minor, header.revision, header.seen_bytes) == (0, 2, 5, 8)
    assert weights.stat().st_size == HEADER_BYTES + 4 * FASTEST_FLOATS
    written = write_weights(loaded.module, tmp_path / "out.weights")
    original = weights.read_bytes()
    assert written.read_bytes()[HEADER_BYTES:] == original[HEADER_BYTES:]
    assert written.read_bytes() == original


def test_written_cfg_and_weights_load_back_to_the_same_network(fastest, tmp_path):
    _, _, loaded = fastest
    write_cfg(loaded.module.cfg_sections(), tmp_path / "back.cfg")
    write_weights(loaded.module, tmp_path / "back.weights")
    again = load(str(tmp_path / "back.cfg"), LoadOptions(weights=str(tmp_path / "back.weights")))
    x = loaded.example_inputs(2)[0]
    with torch.inference_mode():
        assert torch.equal(loaded.module(x), again.module(x))


def test_pruned_network_writes_a_cfg_with_its_new_widths(fastest, tmp_path):
    import torch_pruning as tp

    cfg, weights, _ = fastest
    model = load(str(cfg), LoadOptions(weights=str(weights))).module
    x = torch.randn(1, 3, 320, 320, generator=torch.Generator().manual_seed(0))
    heads = [model.blocks[y.index - 1] for y in model.yolo_layers]  # their widths are fixed by classes
    pruner = tp.pruner.MagnitudePruner(
        model, x, tp.importance.MagnitudeImportance(), pruning_ratio=0.25, ignored_layers=heads
    )
    pruner.step()
    sections = model.cfg_sections()
    assert sections[1].options["filters"] != "8" and parse_cfg(cfg)[1].options["filters"] == "8"
    write_cfg(sections, tmp_path / "pruned.cfg")
    write_weights(model, tmp_path / "pruned.weights")
    again = load(str(tmp_path / "pruned.cfg"), LoadOptions(weights=str(tmp_path / "pruned.weights"))).module
    with torch.inference_mode():
        assert torch.equal(model(x), again(x))


def test_too_few_floats_name_the_layer_where_they_ran_out(fastest, tmp_path):
    cfg, weights, _ = fastest
    cut = tmp_path / "cut.weights"
    cut.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(ModelError, match=r"ends inside layer 129 \(\[convolutional\] at .*yolo-fastest-1.1.cfg "
                                         r"line 922\): it needs 30855 floats and 30605 are left"):  # fmt: skip
        load(str(cfg), LoadOptions(weights=str(cut)))


def test_too_many_floats_are_counted(fastest, tmp_path):
    cfg, weights, _ = fastest
    long = tmp_path / "long.weights"
    long.write_bytes(weights.read_bytes() + bytes(40))
    with pytest.raises(ModelError, match=r"holds 10 more floats than the cfg's layers take; the last layer with "
                                         r"weights is layer 129 \(\[convolutional\] at .* line 922\)"):  # fmt: skip
        load(str(cfg), LoadOptions(weights=str(long)))
    long.write_bytes(weights.read_bytes() + bytes(3))
    with pytest.raises(ModelError, match=r"3 more bytes \(not whole floats\)"):
        load(str(cfg), LoadOptions(weights=str(long)))


def test_missing_and_headless_files(fastest, tmp_path):
    cfg = str(fastest[0])
    with pytest.raises(ModelError, match="weights file not found"):
        load(cfg, LoadOptions(weights=str(tmp_path / "none.weights")))
    (tmp_path / "tiny.weights").write_bytes(bytes(10))
    with pytest.raises(ModelError, match="holds 10 bytes, shorter than a Darknet weights header"):
        load(cfg, LoadOptions(weights=str(tmp_path / "tiny.weights")))
    (tmp_path / "half.weights").write_bytes(np.array([0, 2, 5, 0], "<i4").tobytes()[:-1] + bytes(1))
    with pytest.raises(ModelError, match="holds 16 bytes, shorter than its 20-byte header"):
        load(cfg, LoadOptions(weights=str(tmp_path / "half.weights")))


TINY = """
    [convolutional]
    filters=2
    size=1
    batch_normalize=1
    [convolutional]
    filters=3
    size=1
    [connected]
    output=2
    batch_normalize=1
    [connected]
    output=1
"""


@pytest.mark.parametrize("version, seen_format", [((0, 2, 5), "<u8"), ((0, 1, 0), "<u4"), ((0, 1001, 0), "<u4")])
def test_layout_follows_darknets_order(make_cfg, tmp_path, version, seen_format):
    """A file built by hand in Darknet's order lands in the right tensors; transposed connected weights too."""
    path = make_cfg(TINY, w=2, h=1, c=1)
    transposed = version[1] > 1000
    f = iter(np.arange(1, 100, dtype=np.float32))
    take = lambda n: np.array([next(f) for _ in range(n)], np.float32)
    conv0 = [take(2), take(2), take(2), take(2) + 10, take(2)]  # beta, gamma, mean, variance, weights (2x1x1x1)
    conv1 = [take(3), take(6)]  # biases, weights (3x2x1x1)
    fc0 = [take(2), take(12), take(2), take(2), take(2) + 10]  # biases, weights (2x6), gamma, mean, variance
    fc1 = [take(1), take(2)]
    header = np.array(version, "<i4").tobytes() + np.array([7], seen_format).tobytes()
    weights = tmp_path / "hand.weights"
    weights.write_bytes(header + np.concatenate(conv0 + conv1 + fc0 + fc1).astype("<f4").tobytes())
    model = load(str(path), LoadOptions(weights=str(weights))).module
    conv, conv_b, fc, fc_b = model.blocks
    np.testing.assert_array_equal(conv.bn.bias.detach(), conv0[0])
    np.testing.assert_array_equal(conv.bn.running_var.detach(), conv0[3])
    np.testing.assert_array_equal(conv.conv.weight.detach().flatten(), conv0[4])
    np.testing.assert_array_equal(conv_b.conv.bias.detach(), conv1[0])
    np.testing.assert_array_equal(fc.bn.bias.detach(), fc0[0])
    np.testing.assert_array_equal(fc.bn.weight.detach(), fc0[2])
    fc_weight = fc0[1].reshape(6, 2).T if transposed else fc0[1].reshape(2, 6)
    np.testing.assert_array_equal(fc.linear.weight.detach(), fc_weight)
    np.testing.assert_array_equal(fc_b.linear.bias.detach(), fc1[0])
    assert model.weights_header == WeightsHeader(*version, 7)
    assert write_weights(model, tmp_path / "back.weights").read_bytes() == weights.read_bytes()


def test_random_init_writes_the_current_darknet_header(make_cfg, tmp_path):
    model = load(str(make_cfg(TINY, w=2, h=1, c=1)), LoadOptions()).module
    data = write_weights(model, tmp_path / "new.weights").read_bytes()
    assert np.frombuffer(data[:12], "<i4").tolist() == [0, 2, 5] and len(data) == HEADER_BYTES + 4 * 42
