"""The real agent (targets/agent.py, in a subprocess) telling emulation from hardware by itself, and every timing it
returns carrying the label. Under qemu-user, uname names the emulated machine while /proc/cpuinfo is the host
kernel's; the /proc/cpuinfo texts below are a Raspberry Pi 5's and an x86 server's, read through
EDGEPRUNE_SYSFS_ROOT (the agent's switch for reading /proc and /sys elsewhere). This host is x86_64, so the Pi's
cpuinfo is what an x86 userland emulated on an arm64 machine would see; tests/emulated_arm64 runs the other
direction for real."""

import platform

import pytest

from edgeprune.devices.agent_client import AgentSession
from edgeprune.devices.transport import LocalTransport

# Raspberry Pi 5, Raspberry Pi OS Bookworm 64-bit (first processor and the board lines)
PI5_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x4
CPU part\t: 0xd0b
CPU revision\t: 1

Revision\t: d04170
Model\t\t: Raspberry Pi 5 Model B Rev 1.0
"""
X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model name\t: AMD EPYC 7B13
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov sse sse2 avx avx2
"""

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="the cpuinfo texts assume an x86_64 host")


@pytest.mark.parametrize(("cpuinfo", "emulated"), [(PI5_CPUINFO, True), (X86_CPUINFO, False), ("", False)])
def test_agent_labels_timings_when_cpuinfo_and_machine_disagree(cpuinfo, emulated, tiny_onnx, tmp_path, monkeypatch):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cpuinfo").write_text(cpuinfo)
    monkeypatch.setenv("EDGEPRUNE_SYSFS_ROOT", str(tmp_path))
    with AgentSession(LocalTransport()) as agent:
        info = agent.info("dev", "onnxruntime")
        latency = agent.bench(tiny_onnx, "onnxruntime", threads=1, warmup=1, runs=3).latency_stats()
    if emulated:
        assert info.emulation["kind"] == "qemu-user"
        assert "x86_64" in info.emulation["evidence"] and "arm CPU" in info.emulation["evidence"]
        assert latency.emulation == "emulated (qemu-user): not representative of the device"
        assert latency.emulation in latency.summary() and latency.emulation in info.describe()
        assert latency.to_dict()["emulation"] == latency.emulation  # in the JSON, not only in the text
    else:
        assert info.emulation is None and latency.emulation is None
        assert "emulated" not in latency.summary() and "emulated" not in info.describe()
