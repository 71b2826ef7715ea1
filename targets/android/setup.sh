#!/usr/bin/env bash
# Check the adb connection to an Android phone and, given a benchmark_model binary, push it. Runs on the host.
# Usage: bash setup.sh [path/to/benchmark_model]
set -u
fail=0
ok()  { echo "ok    $*"; }
bad() { echo "MISSING $*"; fail=1; }

command -v adb >/dev/null || { bad "adb (sudo apt-get install adb)"; exit 1; }
state=$(adb get-state 2>&1) && [ "$state" = "device" ] && ok "adb device ${ANDROID_SERIAL:-}" \
  || { bad "a phone in 'device' state (adb get-state: $state); with several attached set ANDROID_SERIAL"; exit 1; }
ok "Android $(adb shell getprop ro.build.version.release | tr -d '\r') (SDK $(adb shell getprop ro.build.version.sdk | tr -d '\r')), $(adb shell getprop ro.product.model | tr -d '\r')"
abi=$(adb shell getprop ro.product.cpu.abi | tr -d '\r'); ok "ABI $abi"

if [ $# -ge 1 ]; then
  adb push "$1" /data/local/tmp/benchmark_model >/dev/null && adb shell chmod +x /data/local/tmp/benchmark_model \
    && ok "benchmark_model pushed to /data/local/tmp" || bad "pushing $1"
fi
if adb shell test -x /data/local/tmp/benchmark_model; then ok "/data/local/tmp/benchmark_model"
else bad "/data/local/tmp/benchmark_model (see README.md: prebuilt benchmark binaries, $abi)"; fi
exit $fail
