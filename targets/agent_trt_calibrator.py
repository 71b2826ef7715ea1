"""int8 calibration for the agent's TensorRT builder: calibration data on the device (a directory of .npy batches,
an .npy of samples, or TensorRT's calibration cache of an earlier build), the batches TensorRT is fed, and the
IInt8EntropyCalibrator2 that feeds them.

Python >= 3.6, standard library + numpy (+ TensorRT for make_entropy_calibrator only); the rest is testable without
TensorRT.
"""

import os

from agent_runtimes import AgentError

DEFAULT_CALIBRATION_BATCH = 8


def calibration_kind(path):
    """npy_dir (one .npy per batch), npy_file (samples stacked on the first axis) or cache (TensorRT's calibration
    cache from an earlier build: read, not recomputed)."""
    if os.path.isdir(path):
        if not any(name.endswith(".npy") for name in os.listdir(path)):
            raise AgentError("calibration directory %s holds no .npy files" % path)
        return "npy_dir"
    if not os.path.isfile(path):
        raise AgentError("calibration data not found on the device: %s" % path)
    return "npy_file" if path.endswith(".npy") else "cache"


class CalibrationBatches(object):
    """float32 batches for int8 calibration, in order: each file of a directory is one batch (sorted by name; all the
    same shape), or an .npy of samples is cut into batches of `batch` samples (a last partial batch is left out, as
    TensorRT calibrates with one batch size)."""

    def __init__(self, path, kind, batch):
        import numpy

        self.numpy = numpy
        if kind == "npy_dir":
            self.files = [os.path.join(path, n) for n in sorted(os.listdir(path)) if n.endswith(".npy")]
            first = numpy.load(self.files[0], mmap_mode="r")
            self.shape, self.count, self.samples = tuple(first.shape), len(self.files), None
        else:
            self.files, self.samples = None, numpy.load(path, mmap_mode="r")
            if self.samples.ndim < 1 or len(self.samples) < batch:
                raise AgentError(
                    "calibration file %s holds %d samples, fewer than one batch of %d"
                    % (path, len(self.samples) if self.samples.ndim else 0, batch)
                )
            self.shape = (batch,) + tuple(self.samples.shape[1:])
            self.count = len(self.samples) // batch
        if not self.shape:
            raise AgentError("calibration batches must have a batch axis (got a scalar in %s)" % path)
        self.batch_size = self.shape[0]
        self.used = 0

    def next(self):
        """The next batch as a C-contiguous float32 array, or None when all were given."""
        if self.used >= self.count:
            return None
        if self.files is not None:
            array = self.numpy.load(self.files[self.used])
            if tuple(array.shape) != self.shape:
                raise AgentError(
                    "calibration batch %s has shape %s, the first one %s"
                    % (self.files[self.used], list(array.shape), list(self.shape))
                )
        else:
            array = self.samples[self.used * self.batch_size : (self.used + 1) * self.batch_size]
        self.used += 1
        return self.numpy.ascontiguousarray(array, dtype=self.numpy.float32)


def check_calibration_shape(network_shape, batch_shape):
    """The calibration batch must fit the network input: same rank, equal wherever the network's dimension is fixed."""
    fits = len(network_shape) == len(batch_shape) and all(n < 0 or n == b for n, b in zip(network_shape, batch_shape))
    if not fits:
        raise AgentError(
            "calibration batches of shape %s do not fit the network input of shape %s (-1: dynamic)"
            % (list(batch_shape), list(network_shape))
        )


def read_calibration_cache(path):
    """The cache's bytes, or None (then TensorRT calibrates from the batches)."""
    if not path or not os.path.isfile(path) or os.path.getsize(path) == 0:
        return None
    with open(path, "rb") as handle:
        return handle.read()


def write_file_atomically(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.rename(tmp, path)


class CalibrationFeeder(object):
    """What the IInt8EntropyCalibrator2 subclass delegates to: copies each batch to one device buffer and hands TensorRT
    its pointer; reads the cache only when calibrating from a cache file, writes it after calibrating from batches.
    An error inside a TensorRT callback cannot propagate, so it is kept in `error` and reported after the build."""

    def __init__(self, batches, cuda, cache_path, read_cache):
        self.batches, self.cuda, self.cache_path, self.read_cache_file = batches, cuda, cache_path, read_cache
        self.batch_size = batches.batch_size if batches is not None else 1
        self.pointer, self.handle, self.error, self.given = None, None, None, 0

    def get_batch(self, names):
        if self.batches is None:
            return None
        try:
            if len(names) != 1:
                raise AgentError(
                    "int8 calibration from .npy feeds one input; the network has %d (%s)"
                    % (len(names), ", ".join(names))
                )
            array = self.batches.next()
            if array is None:
                return None
            if self.pointer is None:
                self.pointer, self.handle = self.cuda.malloc(array.nbytes)
            self.cuda.to_device(self.pointer, array)
            self.given += 1
            return [self.pointer]
        except Exception as exc:
            self.error = exc
            return None

    def read_cache(self):
        return read_calibration_cache(self.cache_path) if self.read_cache_file else None

    def write_cache(self, cache):
        try:
            write_file_atomically(self.cache_path, bytes(cache))
        except Exception as exc:
            self.error = exc


def make_entropy_calibrator(trt, feeder):
    """An IInt8EntropyCalibrator2 (TensorRT Python API, Int8/EntropyCalibrator2.html: get_batch_size, get_batch(names),
    read_calibration_cache, write_calibration_cache) delegating to `feeder`."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self):
            return feeder.batch_size

        def get_batch(self, names, *rest):
            return feeder.get_batch(names)

        def read_calibration_cache(self, *rest):
            return feeder.read_cache()

        def write_calibration_cache(self, cache, *rest):
            feeder.write_cache(cache)

    return EntropyCalibrator()


def default_calibration_batch(shapes):
    """The network's batch when its first axis is fixed (all inputs agree), else DEFAULT_CALIBRATION_BATCH."""
    fixed = {shape[0] for shape in shapes if shape and shape[0] > 0}
    return fixed.pop() if len(fixed) == 1 else DEFAULT_CALIBRATION_BATCH
