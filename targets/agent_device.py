"""What edgeprune's on-device agent (targets/agent.py) reads about the device: /sys and /proc files (under a root
tests can move), the CPU model, cpufreq clocks, thermal zones and the raw output of device tools (the host parses it).

Python >= 3.6 and the standard library only (see agent_runtimes.py for the rules).
"""

import glob
import os
import platform
import shutil
import subprocess

# Every /sys and /proc path is read under this root (default "/"). Tests point it at a directory laid out like
# sysfs; on a device it stays unset.
SYSFS_ROOT_ENV = "EDGEPRUNE_SYSFS_ROOT"


def sysfs_path(path):
    """An absolute /sys or /proc path under the sysfs root."""
    return os.path.join(os.environ.get(SYSFS_ROOT_ENV) or "/", path.lstrip("/"))


def read_text(path):
    """The file's text, stripped, or None when it cannot be read."""
    try:
        with open(path) as handle:
            return handle.read().strip()
    except (IOError, OSError):
        return None


def cpu_model():
    text = read_text(sysfs_path("/proc/cpuinfo")) or ""
    for key in ("model name", "Model", "Hardware", "cpu model"):
        for line in text.splitlines():
            if line.split(":")[0].strip() == key:
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


# platform.machine() -> the CPU family it names; and the /proc/cpuinfo fields only that family's kernels write.
_FAMILIES = {
    "aarch64": "arm",
    "arm64": "arm",
    "armv7l": "arm",
    "armv8l": "arm",
    "x86_64": "x86",
    "amd64": "x86",
    "i686": "x86",
    "i386": "x86",
}
_CPUINFO_FIELDS = (("x86", ("vendor_id", "flags")), ("arm", ("CPU implementer", "Features")))


def emulation():
    """None on real hardware; under user-mode emulation (qemu-user runs this Python, e.g. an arm64 userland on an
    x86 host through binfmt_misc) {"kind": "qemu-user", "evidence": ...}. qemu-user reports the emulated machine in
    uname, but /proc/cpuinfo is the host kernel's and describes the host's CPU."""
    machine = platform.machine().lower()
    text = read_text(sysfs_path("/proc/cpuinfo")) or ""
    fields = {line.split(":")[0].strip() for line in text.splitlines() if ":" in line}
    described = [family for family, markers in _CPUINFO_FIELDS if fields.intersection(markers)]
    if machine not in _FAMILIES or len(described) != 1 or described[0] == _FAMILIES[machine]:
        return None
    return {
        "kind": "qemu-user",
        "evidence": "platform.machine() is %s but /proc/cpuinfo describes an %s CPU (%s)"
        % (platform.machine(), described[0], cpu_model()),
    }


def run_command(argv, timeout=5.0):
    """(returncode, stdout+stderr) of a short command, or (None, why it could not run)."""
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    except (IOError, OSError) as exc:
        return None, "%s cannot run: %s" % (argv[0], exc)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None, "%s did not answer within %.0f s" % (" ".join(argv), timeout)
    return proc.returncode, out


def cpu_clocks():
    """cpufreq per policy: governor, min/max (configuration) and the current frequency, in kHz."""
    policies = {}
    for path in sorted(glob.glob(sysfs_path("/sys/devices/system/cpu/cpufreq/policy*"))):

        def value(name, path=path):
            text = read_text(os.path.join(path, name))
            return int(text) if text and text.isdigit() else text

        policies[os.path.basename(path)] = {
            "cpus": read_text(os.path.join(path, "affected_cpus")),
            "governor": value("scaling_governor"),
            "min_khz": value("scaling_min_freq"),
            "max_khz": value("scaling_max_freq"),
            "cur_khz": value("scaling_cur_freq"),
        }
    return policies


def thermal_zones():
    temps = {}
    for path in sorted(glob.glob(sysfs_path("/sys/class/thermal/thermal_zone*"))):
        kind, milli = read_text(os.path.join(path, "type")), read_text(os.path.join(path, "temp"))
        try:
            temps["%s (%s)" % (kind, os.path.basename(path))] = int(milli) / 1000.0
        except (TypeError, ValueError):
            continue
    return temps


def tool_output(argv):
    """Raw output of a device tool when it exists and succeeds, else None (the host parses it)."""
    if not shutil.which(argv[0]):
        return None
    code, out = run_command(argv, timeout=5.0)
    return out.strip() if code == 0 else None
