#!/usr/bin/env bash
# Check (and with --install, set up) what edgeprune's agent needs on a Raspberry Pi. Runs on the Pi.
# Usage: bash setup.sh [--install] [--runtime tflite|onnxruntime]
set -u
install=0; runtime=tflite
while [ $# -gt 0 ]; do
  case "$1" in
    --install) install=1 ;;
    --runtime) runtime="$2"; shift ;;
    *) echo "usage: bash setup.sh [--install] [--runtime tflite|onnxruntime]"; exit 2 ;;
  esac; shift
done
venv="$HOME/edgeprune-venv"
fail=0
ok()  { echo "ok    $*"; }
bad() { echo "MISSING $*"; fail=1; }

[ "$(uname -m)" = "aarch64" ] && ok "aarch64" || bad "a 64-bit OS (uname -m is $(uname -m))"
[ -r /proc/device-tree/model ] && ok "board: $(tr -d '\0' < /proc/device-tree/model)"
command -v python3 >/dev/null && ok "python3 $(python3 -c 'import platform; print(platform.python_version())')" || bad "python3"

if [ $install = 1 ]; then
  python3 -m venv "$venv" || { bad "python3 -m venv (sudo apt-get install python3-venv)"; exit 1; }
  case "$runtime" in
    tflite) "$venv/bin/pip" install -q numpy ai-edge-litert ;;
    onnxruntime) "$venv/bin/pip" install -q numpy onnxruntime ;;
    *) bad "runtime $runtime (tflite | onnxruntime)"; exit 2 ;;
  esac || bad "pip install into $venv"
fi
py="$venv/bin/python"; [ -x "$py" ] || py=python3
"$py" -c 'import numpy' 2>/dev/null && ok "numpy in $py" || bad "numpy in $py (rerun with --install)"
case "$runtime" in
  tflite)
    if "$py" -c 'from ai_edge_litert.interpreter import Interpreter' 2>/dev/null; then ok "ai-edge-litert in $py"
    elif "$py" -c 'from tflite_runtime.interpreter import Interpreter' 2>/dev/null; then ok "tflite-runtime in $py"
    else bad "a TFLite runtime in $py (ai-edge-litert; rerun with --install)"; fi ;;
  onnxruntime) "$py" -c 'import onnxruntime' 2>/dev/null && ok "onnxruntime in $py" || bad "onnxruntime in $py" ;;
esac

command -v vcgencmd >/dev/null && ok "vcgencmd: $(vcgencmd get_throttled 2>&1)" || bad "vcgencmd (Raspberry Pi OS ships it)"
if grep -q "Raspberry Pi 5" /proc/device-tree/model 2>/dev/null; then
  vcgencmd pmic_read_adc >/dev/null 2>&1 && ok "vcgencmd pmic_read_adc" || bad "vcgencmd pmic_read_adc (update the firmware)"
fi
gov=/sys/devices/system/cpu/cpufreq/policy0/scaling_governor
[ -r $gov ] && ok "cpufreq governor: $(cat $gov)" || bad "$gov"
sudo -n true 2>/dev/null && ok "sudo without a password" || echo "note  sudo asks for a password: clocks cannot be pinned unattended (see README.md)"
exit $fail
