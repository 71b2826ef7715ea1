"""TFLite benchmark_model output, every generation, each sample copied from the source named above it."""

import pytest

from edgeprune.devices.benchmark_model import (
    BenchmarkOutputError,
    RunStats,
    parse_benchmark_model_output,
    parse_stats_line,
)

# Current format with percentiles and an "INFO: " prefix (TF Lite 2.18/2.20, TI AM62x, CPU only):
# TexasInstruments/processor-sdk-doc source/linux/Foundational_Components/Machine_Learning/tflite.rst.
TI_AM62X = """\
   INFO: STARTING!
   INFO: Log parameter values verbosely: [0]
   INFO: Graph: [/usr/share/oob-demo-assets/models/ssd_mobilenet_v2_coco.tflite]
   INFO: Signature to run: []
   INFO: Use xnnpack: [0]
   INFO: Loaded model /usr/share/oob-demo-assets/models/ssd_mobilenet_v2_coco.tflite
   INFO: The input model file size (MB): 67.3128
   INFO: Initialized session in 5.579ms.
   INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
   INFO: count=1 curr=1357602 p5=1357602 median=1357602 p95=1357602

   INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
   INFO: count=50 first=1249964 curr=1240143 min=1238588 max=1252566 avg=1.24027e+06 std=2565 p5=1238753 median=1239807 p95=1247415

   INFO: Inference timings in us: Init: 5579, First inference: 1357602, Warmup (avg): 1.3576e+06, Inference (avg): 1.24027e+06
   INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
   INFO: Memory footprint delta from the start of the tool (MB): init=6.36328 overall=109.832
"""

# Current format as Android's logcat shows it: tensorflow/tensorflow tensorflow/lite/tools/benchmark/android/README.md.
ANDROID_LOGCAT = (
    "... tflite  : Inference timings in us: Init: 1007529, First inference: 4098, Warmup (avg): 1686.59, "
    "Inference (avg): 1687.92"
)

# "Inference:" generation (TF ~2.0-2.2) after op profiling, whose "Timings (microseconds): count=..." line is the
# profiler's, not a phase: the then tensorflow/lite/tools/benchmark/README.md of tensorflow/tensorflow.
TF2_README = """\
Number of nodes executed: 31
Timings (microseconds): count=50 first=79449 curr=81350 min=77385 max=88213 avg=79732 std=1929
Memory (bytes): count=0
31 nodes observed


Average inference timings in us: Warmup: 83235, Init: 38467, Inference: 79760.9
"""

# "no stats" generation (TF ~1.13) on a Zedboard: tflite-soc/zedboard-setup benchmarking.md.
ZEDBOARD = """\
Loaded model ../../tensorflow-models/mobilenet-v1/mobilenet_v1_1.0_224_quant.tflite
resolved reporter
Initialized session in 21.039ms
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=1 curr=751932

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=747738 curr=747428 min=747331 max=748577 avg=747733 std=293

Average inference timings in us: Warmup: 751932, Init: 21039, no stats: 747733
"""


def test_current_format_with_percentiles():
    r = parse_benchmark_model_output(TI_AM62X)
    assert r.format == "current"
    assert (r.init_us, r.first_inference_us, r.warmup_avg_us, r.inference_avg_us) == (
        5579,
        1357602,
        1.3576e6,
        1.24027e6,
    )
    assert r.inference_avg_ms == pytest.approx(1240.27)
    assert r.inference == RunStats(
        count=50,
        curr_us=1240143,
        first_us=1249964,
        min_us=1238588,
        max_us=1252566,
        avg_us=1.24027e6,
        std_us=2565,
        p5_us=1238753,
        median_us=1239807,
        p95_us=1247415,
    )
    assert r.warmup.count == 1 and r.warmup.avg_us == 1357602 and r.warmup.std_us == 0  # one run: all same
    assert (r.init_mem_mb, r.overall_mem_mb) == (6.36328, 109.832)


def test_current_format_from_logcat():
    r = parse_benchmark_model_output(ANDROID_LOGCAT)
    assert r.format == "current" and r.inference_avg_us == 1687.92 and r.inference is None


def test_older_inference_format_skips_the_op_profiler_line():
    r = parse_benchmark_model_output(TF2_README)
    assert r.format == "inference" and (r.warmup_avg_us, r.init_us, r.inference_avg_us) == (83235, 38467, 79760.9)
    assert r.first_inference_us is None and r.inference is None and r.warmup is None


def test_no_stats_format():
    r = parse_benchmark_model_output(ZEDBOARD)
    assert r.format == "no_stats" and (r.warmup_avg_us, r.init_us, r.inference_avg_us) == (751932, 21039, 747733)
    assert r.warmup.count == 1 and r.inference.avg_us == 747733 and r.inference.p95_us is None


def test_statistics_line_generations():
    # tensorflow/core/util/stats_calculator.h Stat::OutputToStream: "count=N curr=X" with "(all same)" when every
    # run took the same time; the oldest revision printed curr first ("curr=X count=N min=... max=... avg=... std=...").
    assert parse_stats_line("count=3 curr=500(all same)").avg_us == 500
    old = parse_stats_line("curr=1200 count=10 min=1100 max=1300 avg=1210.5 std=40")
    assert (old.count, old.min_us, old.avg_us, old.first_us) == (10, 1100, 1210.5, None)
    assert parse_stats_line("count=0").count == 0
    with pytest.raises(BenchmarkOutputError, match="cannot read benchmark_model statistics line: 'count=50 first=x'"):
        parse_stats_line("count=50 first=x")


def test_missing_or_garbled_summary_is_an_error_naming_it():
    with pytest.raises(BenchmarkOutputError, match="no 'inference timings in us' summary.*Failed to invoke"):
        parse_benchmark_model_output("INFO: Loaded model m.tflite\nERROR: Failed to invoke the interpreter\n")
    with pytest.raises(BenchmarkOutputError, match="summary line: 'Inference timings in us: Init: n/a'"):
        parse_benchmark_model_output("Inference timings in us: Init: n/a\n")
