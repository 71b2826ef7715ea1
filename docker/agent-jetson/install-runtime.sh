#!/bin/sh
# The Jetson-specific part of the agent image.
#   install BINDING  the CUDA binding that the agent's TensorRT runner moves tensors with (targets/agent_trt_cuda.py
#                    takes pycuda, else cuda-python): "auto" or a pip requirement ("pycuda", "cuda-python==12.6.*")
#   check DIR        the agent in DIR finds a CUDA binding, and TensorRT's Python bindings import
# "auto" goes by the image's Python, which names the JetPack release (Ubuntu 18.04 / 20.04 / 22.04 under L4T
# r32 / r35 / r36):
#   3.6  JetPack 4.6: pycuda 2022.1, the last pycuda for Python 3.6 (jetson-containers, packages/cuda/pycuda/config.py).
#        cuda-python supports neither CUDA 10.2 nor Python < 3.9 (NVIDIA/cuda-python#59).
#   3.8  JetPack 5.1: pycuda, the newest release that declares Python 3.8; cuda-python 12.x needs Python >= 3.9.
#   3.9+ JetPack 6: cuda-python of the image's CUDA minor version (12.6 in l4t-jetpack r36.4): a wheel, no compiler;
#        its runtime API ran on a Jetson AGX Orin under JetPack 6 (NVIDIA/cuda-python#64).
# pycuda is compiled here against the image's CUDA and Ubuntu's numpy, without build isolation: a wheel built against
# a newer numpy than the one installed fails to import. CUDA is looked for in ${CUDA_HOME:-/usr/local/cuda}.
set -eu
cuda=${CUDA_HOME:-/usr/local/cuda}
python=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')

pip_install() { python3 -m pip install --no-cache-dir "$@"; }

auto_binding() {
  case "$python" in
    3.6) echo "pycuda==2022.1" ;;
    3.7 | 3.8) echo "pycuda" ;;
    *)
      read_version='import json, sys; v = json.load(open(sys.argv[1]))["cuda"]["version"]; print(v.rsplit(".", 1)[0])'
      version=$(python3 -c "$read_version" "$cuda/version.json" 2>/dev/null) || {
        echo "install-runtime.sh: no $cuda/version.json to choose cuda-python by; pass --build-arg CUDA_BINDING" >&2
        exit 2
      }
      echo "cuda-python==$version.*" ;;
  esac
}

install_pycuda() {
  if [ ! -f "$cuda/include/cuda.h" ]; then
    echo "install-runtime.sh: no $cuda/include/cuda.h in the build. JetPack 4's l4t-base gets CUDA from the host only" \
      "when the NVIDIA runtime runs the build: set \"default-runtime\": \"nvidia\" in /etc/docker/daemon.json and" \
      "build with DOCKER_BUILDKIT=0 docker build (docker/README.md)" >&2
    exit 2
  fi
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends build-essential python3-dev
  # pip 21.3 and setuptools 59.6 are the last releases for Python 3.6
  if [ "$python" = 3.6 ]; then
    pip_install --upgrade "pip<22" "setuptools<60" wheel
  else
    pip_install --upgrade pip setuptools wheel
  fi
  # pycuda's build reads /etc/aksetup-defaults.py (its aksetup_helper.py); it links against the toolkit's stub
  # libcuda.so, the board's driver provides the real libcuda.so.1 at run time
  printf 'CUDA_ROOT = "%s"\nCUDADRV_LIB_DIR = ["%s/lib64", "%s/lib64/stubs"]\n' "$cuda" "$cuda" "$cuda" \
    >/etc/aksetup-defaults.py
  PATH="$cuda/bin:$PATH" pip_install --no-build-isolation "$1"
  rm -f /etc/aksetup-defaults.py
  DEBIAN_FRONTEND=noninteractive apt-get purge -y --auto-remove build-essential python3-dev
  rm -rf /var/lib/apt/lists/*
}

# Runs python3 with $1 as its code in directory $2. A build without the NVIDIA runtime has no libcuda.so.1 (the
# board's driver brings it at run time), so imports that link it are checked against the toolkit's stub.
python_with_libcuda() {
  libs=${LD_LIBRARY_PATH:-}
  stub=""
  if ! python3 -c 'import ctypes; ctypes.CDLL("libcuda.so.1")' 2>/dev/null \
    && [ -f "$cuda/lib64/stubs/libcuda.so" ]; then
    stub=$(mktemp -d)
    ln -s "$cuda/lib64/stubs/libcuda.so" "$stub/libcuda.so.1"
    libs="$stub${libs:+:$libs}"
  fi
  status=0
  (cd "$2" && LD_LIBRARY_PATH="$libs" python3 -c "$1") || status=$?
  [ -z "$stub" ] || rm -rf "$stub"
  return "$status"
}

case "${1:-}" in
  install)
    binding=${2:-auto}
    if [ "$binding" = auto ]; then binding=$(auto_binding); fi
    echo "install-runtime.sh: Python $python, CUDA binding $binding"
    case "$binding" in
      pycuda*) install_pycuda "$binding" ;;
      *) pip_install "$binding" ;;
    esac ;;
  check)
    [ -n "${2:-}" ] || { echo "usage: sh install-runtime.sh check AGENT_DIR" >&2; exit 2; }
    found='from agent_trt_cuda import cuda_binding_available as found; b = found(); print("CUDA binding:", b); assert b'
    python_with_libcuda "$found" "$2"
    # JetPack 4's TensorRT reaches the container from the host at run time (the NVIDIA runtime's CSV mounts): a
    # build without that runtime cannot import it
    if [ "$python" != 3.6 ] || [ -f "$cuda/include/cuda.h" ]; then
      python_with_libcuda 'import tensorrt; print("tensorrt", tensorrt.__version__)' "$2"
    fi ;;
  *)
    echo "usage: sh install-runtime.sh install auto|REQUIREMENT | check AGENT_DIR" >&2
    exit 2 ;;
esac
