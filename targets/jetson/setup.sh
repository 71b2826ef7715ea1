#!/usr/bin/env bash
# Check (and with --install, complete) what edgeprune's agent needs on a Jetson. Runs on the board.
# Usage: bash setup.sh [--install]
set -u
install=0
[ "${1:-}" = "--install" ] && install=1
fail=0
ok()   { echo "ok    $*"; }
bad()  { echo "MISSING $*"; fail=1; }

if [ -r /etc/nv_tegra_release ]; then ok "L4T: $(head -n1 /etc/nv_tegra_release)"; else bad "/etc/nv_tegra_release (is this a Jetson?)"; fi

if command -v python3 >/dev/null; then
  if python3 -c 'import sys; sys.exit(sys.version_info < (3, 6))'; then ok "python3 $(python3 -c 'import platform; print(platform.python_version())')"
  else bad "python3 >= 3.6 (found $(python3 --version 2>&1))"; fi
else bad "python3"; fi

if python3 -c 'import numpy' 2>/dev/null; then ok "numpy $(python3 -c 'import numpy; print(numpy.__version__)')"
elif [ $install = 1 ]; then sudo apt-get install -y python3-numpy && ok "numpy installed" || bad "numpy (apt-get install python3-numpy failed)"
else bad "numpy: sudo apt-get install python3-numpy (or rerun with --install)"; fi

if python3 -c 'import tensorrt' 2>/dev/null; then ok "tensorrt $(python3 -c 'import tensorrt; print(tensorrt.__version__)')"
else bad "TensorRT Python bindings: they ship with JetPack (sudo apt install nvidia-jetpack)"; fi

for tool in nvpmodel jetson_clocks; do
  if command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || [ -x "/usr/bin/$tool" ]; then ok "$tool"; else bad "$tool (part of L4T)"; fi
done
if sudo -n true 2>/dev/null || sudo -n -l /usr/sbin/nvpmodel >/dev/null 2>&1; then ok "sudo without a password for nvpmodel"
else echo "note  sudo asks for a password: see README.md 'sudo without a password' so clocks can be pinned"; fi

ls /sys/class/thermal/thermal_zone*/temp >/dev/null 2>&1 && ok "thermal zones" || bad "/sys/class/thermal/thermal_zone*/temp"
exit $fail
