import json

import numpy as np
import pytest

from edgeprune.errors import ConfigError, DiskError
from edgeprune.latency.microbench import LayerSignature, LayerUse
from edgeprune.latency.table import EntryCache, LatencyTable, TableEntry, measure_missing, needed_entries
from tests.conftest import small_tmpfs

CONV = LayerSignature("conv", (3, 3), padding=(1, 1), height=16, width=16, activation="Relu")
DEPTHWISE = LayerSignature("depthwise", (3, 3), padding=(1, 1), height=16, width=16)


def _entry(signature, cin, cout, ms):
    return TableEntry(signature, cin, cout, ms, ms * 1.1, 30, "onnxruntime", 2)


def _cost(cin, cout):  # a made-up but bilinear cost, so interpolation must reproduce it exactly
    return 0.01 + 0.001 * cin * cout


def _uses():
    return [LayerUse("a", CONV, 32, 64), LayerUse("b", CONV, 64, 64), LayerUse("c", DEPTHWISE, 64, 64)]


def test_needed_entries_cover_every_width_pair_on_the_grid():
    needed = needed_entries(_uses(), step=16)
    conv = {(i, o) for s, i, o in needed if s == CONV}
    assert conv == {(i, o) for i in (16, 32, 48, 64) for o in (16, 32, 48, 64)}  # grids of 32 and 64 merged
    assert {(i, o) for s, i, o in needed if s == DEPTHWISE} == {(c, c) for c in (16, 32, 48, 64)}


def test_interpolation_is_exact_on_the_grid_and_bilinear_between():
    needed = needed_entries(_uses(), step=16)
    table = LatencyTable({(s.key, i, o): _entry(s, i, o, _cost(i, o)) for s, i, o in needed})
    assert table.layer_ms(CONV, 32, 48) == pytest.approx(_cost(32, 48))
    assert table.layer_ms(CONV, 40, 56) == pytest.approx(_cost(40, 56), rel=0.02)  # off-grid widths
    assert table.layer_ms(DEPTHWISE, 24, 24) == pytest.approx((_cost(16, 16) + _cost(32, 32)) / 2)
    assert table.layer_ms(CONV, 8, 64) == pytest.approx(_cost(16, 64) / 2)  # below the grid: in proportion
    with pytest.raises(ConfigError, match="no entries for a conv layer"):
        table.layer_ms(LayerSignature("conv", (5, 5), height=16, width=16), 16, 16)


def test_calibration_fits_scale_and_offset():
    table = LatencyTable({})
    calibrated = table.calibrated([1.0, 2.0, 4.0], [1.5, 2.5, 4.5])
    assert (calibrated.calibration.scale, calibrated.calibration.offset_ms) == pytest.approx((1.0, 0.5))
    assert table.calibrated([2.0], [3.0]).calibration.scale == pytest.approx(1.5)


def test_calibration_by_height_recovers_what_a_layer_costs_at_each_map_size():
    """Models whose layers at 16² cost 0.02 ms more in the graph than their cells and at 8² 0.01 ms less: the fit by
    height finds both (and prices a layer with its own height's term), where one per-layer term cannot."""
    rng = np.random.default_rng(0)
    counts = [{16: int(a), 8: int(b), 1: 1} for a, b in rng.integers(2, 20, size=(10, 2))]
    sums = list(rng.uniform(1.0, 3.0, size=10))
    measured = [1.1 * x + 0.02 * c[16] - 0.01 * c[8] + 0.3 for x, c in zip(sums, counts)]
    layers = [sum(c.values()) for c in counts]
    calibration = LatencyTable({}).calibrated(sums, measured, layers, counts).calibration
    assert calibration.scale == pytest.approx(1.1) and calibration.offset_ms == pytest.approx(0.3)
    assert calibration.per_layer_by_height_ms == pytest.approx({"16": 0.02, "8": -0.01})  # 1²: constant, not fitted
    at_8 = LayerUse("x", LayerSignature("conv", (3, 3), padding=(1, 1), height=8, width=8), 16, 16)
    assert calibration.layer_overhead_ms(at_8) == pytest.approx(-0.01)
    # fewer than two models per term: the single per-layer term, as before
    few = LatencyTable({}).calibrated(sums[:7], measured[:7], layers[:7], counts[:7]).calibration
    assert few.per_layer_by_height_ms == {} and few.n == 7


def test_an_interrupted_build_resumes_and_measures_only_what_is_missing(tmp_path):
    cache, needed = EntryCache(tmp_path / "device.jsonl"), needed_entries(_uses(), step=16)
    measured = []

    def measure(signature, cin, cout):
        if len(measured) == 7:
            raise KeyboardInterrupt  # the user pressed Ctrl-C, or the device went away
        measured.append((signature.key, cin, cout))
        return _entry(signature, cin, cout, _cost(cin, cout))

    with pytest.raises(KeyboardInterrupt):
        measure_missing(needed, cache, measure)
    assert len(cache.load()) == 7

    measured.clear()
    first_seven = set(cache.load())
    entries, measured_now, _ = measure_missing(needed, cache, lambda s, i, o: measure(s, i, o) if len(measured) < 7
                                            else _entry(s, i, o, _cost(i, o)))  # fmt: skip
    assert measured_now == len(needed) - 7 and len(entries) == len(needed)
    assert not first_seven & set(measured)  # nothing measured twice


def test_a_damaged_cache_line_is_detected_and_measured_again(tmp_path):
    cache, needed = EntryCache(tmp_path / "device.jsonl"), needed_entries(_uses(), step=16)
    measure_missing(needed, cache, lambda s, i, o: _entry(s, i, o, _cost(i, o)))
    lines = cache.path.read_text().splitlines()
    record = json.loads(lines[3])
    record["entry"]["median_ms"] = 0.0001  # edited by hand, or a bit flipped: the digest no longer matches
    lines[3] = json.dumps(record)
    lines[5] = lines[5][: len(lines[5]) // 2]  # a line cut short by a crash
    cache.path.write_text("\n".join(lines) + "\n")

    assert len(cache.load()) == len(needed) - 2 and cache.corrupted == 2
    again = []
    entries, measured_now, _ = measure_missing(
        needed, cache, lambda s, i, o: again.append(1) or _entry(s, i, o, _cost(i, o))
    )
    assert measured_now == 2 == len(again)
    assert min(e.median_ms for e in entries.values()) > 0.001


def test_a_second_pass_keeps_the_faster_timing_and_resumes_too(tmp_path):
    cache, needed = EntryCache(tmp_path / "device.jsonl"), needed_entries(_uses(), step=16)
    calls, ever = [], []

    def measure(signature, cin, cout):
        calls.append((signature.key, cin, cout))
        ever.append(1)
        slow = 3.0 if len(ever) <= len(needed) // 2 else 1.0  # a slow spell during the first half of pass one
        if len(ever) == len(needed) + 5:
            raise KeyboardInterrupt
        return _entry(signature, cin, cout, slow * _cost(cin, cout))

    with pytest.raises(KeyboardInterrupt):
        measure_missing(needed, cache, measure, passes=2)
    calls.clear()
    entries, first, repeats = measure_missing(needed, cache, lambda s, i, o: measure(s, i, o), passes=2)
    assert first == 0 and repeats == len(needed) - 4 == len(calls)  # only the unfinished second passes
    assert all(e.passes == 2 for e in entries.values())
    assert all(e.median_ms == pytest.approx(_cost(e.in_channels, e.out_channels)) for e in entries.values())
    assert measure_missing(needed, cache, measure, passes=2)[1:] == (0, 0)


def test_entries_on_both_sides_of_a_torn_line_are_kept(tmp_path):
    cache, needed = EntryCache(tmp_path / "device.jsonl"), needed_entries(_uses(), step=16)
    first, second, third = (_entry(s, i, o, _cost(i, o)) for s, i, o in needed[:3])
    cache.append(first)
    cache.append(second)
    whole = cache.path.read_text()
    cache.path.write_text(whole[: len(whole) - 30])  # the last line torn by a full disk: no newline at the end
    cache.append(third)
    assert set(cache.load()) == {first.key, third.key} and cache.corrupted == 1

    # a cache written before appends started a fresh line: the whole entry glued to a torn line is still read
    lines = whole.splitlines()
    cache.path.write_text(lines[0][:50] + lines[1] + "\n")
    assert set(cache.load()) == {second.key}


def test_entries_measured_before_the_disk_filled_stay_readable(tmp_path):
    needed = needed_entries(_uses(), step=16)
    with small_tmpfs(tmp_path / "disk", 1, free_kib=8) as disk:
        cache = EntryCache(disk / "lut" / "device.jsonl")
        with pytest.raises(DiskError, match="no space left on the disk writing .*device.jsonl"):
            measure_missing(needed, cache, lambda s, i, o: _entry(s, i, o, _cost(i, o)))
        kept = cache.load()
        assert 0 < len(kept) < len(needed) and cache.corrupted == 0  # every line whole, none lost
        assert cache.path.read_text().endswith("\n")
