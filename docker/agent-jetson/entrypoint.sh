#!/bin/sh
# The Jetson agent image's entry point. sshd starts every session with a clean environment, so the agent would not
# see the LD_LIBRARY_PATH that the base image and the NVIDIA runtime set (CUDA, TensorRT, the Tegra driver): put
# those directories into the dynamic linker's cache instead, then start sshd (docker/agent-arm64/entrypoint.sh:
# keys only, host key made on first start).
set -eu
conf=/etc/ld.so.conf.d/000-edgeprune-agent.conf
: >"$conf"
for dir in $(printf '%s' "${LD_LIBRARY_PATH:-}" | tr ':' ' ') /usr/local/cuda/lib64 /usr/lib/aarch64-linux-gnu/tegra; do
  if [ -d "$dir" ]; then echo "$dir" >>"$conf"; fi
done
ldconfig
exec /usr/local/bin/edgeprune-agent-sshd "$@"
