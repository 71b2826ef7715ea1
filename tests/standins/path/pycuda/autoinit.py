"""pycuda.autoinit creates a CUDA context on import; the stand-in has no context to make."""
