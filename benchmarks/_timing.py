"""Timing an ONNX file independently of edgeprune: a plain ONNX Runtime session in this process (only
intra_op_num_threads set), timed with time.perf_counter. Shared by the benchmarks that check edgeprune's timings."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def ort_session(model_path: Path, threads: int, warmup: int) -> tuple[ort.InferenceSession, dict]:
    """A CPU session on `threads` threads and a fixed random input (dynamic dimensions 1), run `warmup` times."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    meta = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in meta.shape]
    feed = {meta.name: np.random.default_rng(0).standard_normal(shape, dtype=np.float32)}
    for _ in range(warmup):
        session.run(None, feed)
    return session, feed


def median_ms(session: ort.InferenceSession, feed: dict, runs: int) -> float:
    """The median of `runs` timed runs, in milliseconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)
