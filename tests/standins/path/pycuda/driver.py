"""Stand-in pycuda.driver: "device" memory is host memory. Only the calls the agent makes, as pycuda documents
them (documen.tician.de/pycuda/driver.html): mem_alloc (an allocation that int() turns into its address, with
free()), memcpy_htod(dest, src), memcpy_dtoh(dest, src), Stream (handle, synchronize)."""

import ctypes

import numpy as np


class _Allocation:
    def __init__(self, nbytes):
        self._buffer = (ctypes.c_char * nbytes)()

    def __int__(self):
        return ctypes.addressof(self._buffer)

    def free(self):
        self._buffer = None


def mem_alloc(nbytes):
    return _Allocation(nbytes)


def memcpy_htod(dest, src):
    src = np.ascontiguousarray(src)
    ctypes.memmove(int(dest), src.ctypes.data, src.nbytes)


def memcpy_dtoh(dest, src):
    ctypes.memmove(dest.ctypes.data, int(src), dest.nbytes)


class Stream:
    handle = 0

    def synchronize(self):
        pass
