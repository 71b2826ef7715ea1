"""The sensor parsers against published output. Every sample line below is copied from the source named above it;
numbers in brackets are placeholders the source itself prints as variables (noted where so)."""

import pytest

from edgeprune.devices.sensors import (
    SensorError,
    battery_power_w,
    ina3221_rails_w,
    parse_get_throttled,
    parse_nvidia_smi_power,
    parse_nvpmodel_query,
    parse_odpm_energy_value,
    parse_pmic_read_adc,
    parse_tegrastats_line,
    select_rails,
    trace_from_agent,
    unwrap_counter,
)

# --- tegrastats -------------------------------------------------------------------------------------------------------

# JetPack 4, Jetson Nano: rbonghi/jetson_stats tests/tegrastats (the emulator's "Other example Jetson Nano" line).
NANO_JP4 = (
    "RAM 1180/3965MB (lfb 1x2MB) SWAP 149/1024MB (cached 7MB) IRAM 0/252kB(lfb 252kB) "
    "CPU [30%@1036,33%@1036,28%@1036,26%@1036] EMC_FREQ 10%@1600 GR3D_FREQ 0%@76 NVENC 716 NVDEC 716 APE 25 "
    "PLL@57C CPU@60.5C PMIC@100C GPU@59C AO@65C thermal@59.75C POM_5V_IN 4520/4680 POM_5V_GPU 0/0 "
    "POM_5V_CPU 1078/1205"
)
# JetPack 4 (L4T 28), Jetson TX2: github.com/gustavz/realtime_object_detection/issues/24 (comment of 2018-06-15).
TX2_JP4 = (
    "RAM 1685/7854MB (lfb 1044x4MB) SWAP 278/8192MB (cached 23MB) CPU [0%@1303,0%@345,0%@345,0%@1419,0%@1420,"
    "0%@1421] EMC_FREQ 0%@1866 GR3D_FREQ 0%@140 APE 150 MTS fg 1% bg 8% BCPU@41C MCPU@41C GPU@39C PLL@41C "
    "Tboard@37C Tdiode@37.25C PMIC@100C thermal@39.9C VDD_IN 1931/1931 VDD_CPU 231/231 VDD_GPU 154/154 "
    "VDD_SOC 385/385 VDD_WIFI 38/38 VDD_DDR 326/326"
)
# JetPack 4.2, Jetson AGX Xavier (rails without a VDD_ prefix, no board-input rail):
# github.com/martinkersner/gtop/pull/7 (comment of 2019-06-17).
XAVIER_JP42 = (
    "RAM 14700/15692MB (lfb 3x2MB) SWAP 898/8192MB (cached 23MB) CPU [0%@1190,0%@1190,0%@1190,0%@1190,"
    "0%@1190,0%@1190,0%@1190,0%@1190] EMC_FREQ 0% GR3D_FREQ 0% AO@30C GPU@30.5C Tboard@31C Tdiode@32C "
    "AUX@30.5C CPU@31.5C thermal@30.8C PMIC@100C GPU 463/463 CPU 618/618 SOC 2936/2936 CV 0/0 "
    "VDDRQ 309/309 SYS5V 3306/3306"
)
# JetPack 5, Jetson AGX Orin as root (dated 01-03-2023; "NC" = unconnected channels): the jetson_stats tegrastats
# emulator, "Jetson Orin (SUDO)", as vendored in github.com/GDWR/jetson_exporter scripts/tegrastats. The CPU loads
# and GR3D percentages are $RANDOM there; 10 and 20 stand in for them.
ORIN_JP5_ROOT = (
    "01-03-2023 16:07:54 RAM 2257/30536MB (lfb 5392x4MB) SWAP 0/15268MB (cached 0MB) "
    "CPU [10%@729,10%@729,10%@729,10%@729,10%@729,10%@729,10%@729,10%@729,10%@729,10%@729,10%@729,"
    "10%@729] EMC_FREQ 0%@204 GR3D_FREQ 10%@0 GR3D2_FREQ 20%@0 NVJPG1 729 VIC_FREQ 115 APE 233 "
    "CV0@-256C CPU@41.437C Tboard@29C SOC2@39.062C Tdiode@30.75C SOC0@39.031C CV1@-256C GPU@-256C "
    "tj@41.656C SOC1@38.937C CV2@-256C VDD_GPU_SOC 2390mW/2390mW VDD_CPU_CV 796mW/796mW "
    "VIN_SYS_5V0 3522mW/3522mW NC 0mW/0mW VDDQ_VDD2_1V8AO 301mW/301mW NC 0mW/0mW"
)
# ... and the same emulator's non-root Orin line: no rails at all.
ORIN_JP5_USER = (
    "01-03-2023 16:10:22 RAM 2257/30536MB (lfb 5392x4MB) SWAP 0/15268MB (cached 0MB) CPU [10%@729,"
    "10%@729] EMC_FREQ 0% GR3D_FREQ 10% CV0@-256C CPU@41.375C Tboard@29C SOC2@39C Tdiode@30.75C "
    "SOC0@38.906C CV1@-256C GPU@-256C tj@41.468C SOC1@38.843C CV2@-256C"
)
# JetPack 6 (kernel 5.15.148-tegra), Jetson Orin Nano: github.com/henrygd/beszel/issues/286 as kept in
# henrygd/beszel agent/gpu_test.go ("more valid data").
ORIN_NANO_JP6 = (
    "11-15-2024 08:38:09 RAM 6185/7620MB (lfb 8x2MB) SWAP 851/3810MB (cached 1MB) CPU [15%@729,"
    "11%@729,14%@729,13%@729,11%@729,8%@729] EMC_FREQ 43%@2133 GR3D_FREQ 63%@[621] NVDEC off NVJPG off "
    "NVJPG1 off VIC off OFA off APE 200 cpu@53.968C soc2@52.437C soc0@50.75C gpu@53.343C tj@53.968C "
    "soc1@51.656C VDD_IN 12479mW/12479mW VDD_CPU_GPU_CV 4667mW/4667mW VDD_SOC 2817mW/2817mW"
)
# JetPack 6, Orin Nano, idle: henrygd/beszel agent/gpu_test.go ("orin nano", 06-18-2025).
ORIN_NANO_JP6_IDLE = (
    "06-18-2025 11:25:24 RAM 3452/7620MB (lfb 25x4MB) SWAP 1518/16384MB (cached 174MB) "
    "CPU [1%@1420,2%@1420,0%@1420,2%@1420,2%@729,1%@729] GR3D_FREQ 0% cpu@50.031C soc2@49.031C "
    "soc0@50C gpu@49.031C tj@50.25C soc1@50.25C VDD_IN 4824mW/4824mW VDD_CPU_GPU_CV 518mW/518mW "
    "VDD_SOC 1475mW/1475mW"
)


def test_tegrastats_jetpack4_nano_pom_rails_without_units():
    r = parse_tegrastats_line(NANO_JP4)
    assert r.rails_w == {"POM_5V_IN": 4.52, "POM_5V_GPU": 0.0, "POM_5V_CPU": 1.078}
    assert r.average_w["POM_5V_IN"] == 4.68
    assert select_rails(r.rails_w, (), "board_input")[0] == ("POM_5V_IN",)  # RAM/SWAP/IRAM are not rails


def test_tegrastats_jetpack4_tx2_and_xavier():
    tx2 = parse_tegrastats_line(TX2_JP4).rails_w
    assert set(tx2) == {"VDD_IN", "VDD_CPU", "VDD_GPU", "VDD_SOC", "VDD_WIFI", "VDD_DDR"} and tx2["VDD_IN"] == 1.931
    xavier = parse_tegrastats_line(XAVIER_JP42).rails_w
    assert xavier == {"GPU": 0.463, "CPU": 0.618, "SOC": 2.936, "CV": 0.0, "VDDRQ": 0.309, "SYS5V": 3.306}
    rails, rule = select_rails(xavier, (), "board_input")
    assert len(rails) == 6 and "no board-input rail" in rule


def test_tegrastats_jetpack5_orin_mw_units_and_nc_channels():
    r = parse_tegrastats_line(ORIN_JP5_ROOT).rails_w
    assert r == {"VDD_GPU_SOC": 2.39, "VDD_CPU_CV": 0.796, "VIN_SYS_5V0": 3.522, "VDDQ_VDD2_1V8AO": 0.301}
    with pytest.raises(SensorError, match="only\\s+when run as root"):
        parse_tegrastats_line(ORIN_JP5_USER)


@pytest.mark.parametrize("line, vdd_in", [(ORIN_NANO_JP6, 12.479), (ORIN_NANO_JP6_IDLE, 4.824)])
def test_tegrastats_jetpack6_orin_nano(line, vdd_in):
    r = parse_tegrastats_line(line)
    assert set(r.rails_w) == {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"} and r.rails_w["VDD_IN"] == vdd_in
    assert select_rails(r.rails_w, (), "board_input") == (
        ("VDD_IN",),
        "board-input rail VDD_IN (the other rails are inside it)",
    )


def test_tegrastats_garbage_names_the_line():
    with pytest.raises(SensorError, match="not a tegrastats line: 'tegrastats: command failed'"):
        parse_tegrastats_line("tegrastats: command failed")


def test_select_rails_checks_named_rails():
    assert select_rails({"A": 1, "B": 2}, ("B",), "all") == (("B",), "rails named by the profile")
    with pytest.raises(SensorError, match=r"rails \['C'\] are not reported"):
        select_rails({"A": 1}, ("C",), "all")


# --- INA3221 sysfs ----------------------------------------------------------------------------------------------------
# Units from the kernel's Documentation/hwmon/ina3221.rst (inN_input mV, currN_input mA) and, for JetPack 4's iio
# driver, in_powerN_input in mW (rbonghi/jetson_stats jtop/core/power.py, list_all_i2c_ports).


def test_ina3221_hwmon_and_iio_units():
    hwmon = {"rails": [{"rail": "VDD_IN", "volt_mv": 0, "curr_ma": 1}]}
    assert ina3221_rails_w(hwmon, ["5016", "1200"]) == pytest.approx({"VDD_IN": 6.0192})
    iio = {"rails": [{"rail": "POM_5V_IN", "power_mw": 0}]}
    assert ina3221_rails_w(iio, ["3161"]) == {"POM_5V_IN": 3.161}
    with pytest.raises(SensorError, match="not a number in 'n/a'"):
        ina3221_rails_w(iio, ["n/a"])


# --- Raspberry Pi 5 ---------------------------------------------------------------------------------------------------
# `vcgencmd pmic_read_adc` on a Pi 5: github.com/jfikar/RPi5-power README.md.
PMIC = """\
 3V7_WL_SW_A current(0)=0.00000000A
   3V3_SYS_A current(1)=0.06245952A
   1V8_SYS_A current(2)=0.16102850A
  DDR_VDD2_A current(3)=0.00780744A
  DDR_VDDQ_A current(4)=0.00000000A
   1V1_SYS_A current(5)=0.17566740A
    0V8_SW_A current(6)=0.32791250A
  VDD_CORE_A current(7)=10.87674000A
   3V3_DAC_A current(17)=0.00036630A
   3V3_ADC_A current(18)=0.00042735A
   0V8_AON_A current(16)=0.00579975A
      HDMI_A current(22)=0.01367520A
 3V7_WL_SW_V volt(8)=3.79999600V
   3V3_SYS_V volt(9)=3.30632200V
   1V8_SYS_V volt(10)=1.79828900V
  DDR_VDD2_V volt(11)=1.10292900V
  DDR_VDDQ_V volt(12)=0.60476130V
   1V1_SYS_V volt(13)=1.10439400V
    0V8_SW_V volt(14)=0.80256330V
  VDD_CORE_V volt(15)=0.89745940V
   3V3_DAC_V volt(20)=3.30494200V
   3V3_ADC_V volt(21)=3.30219400V
   0V8_AON_V volt(19)=0.79736190V
      HDMI_V volt(23)=5.07056000V
     EXT5V_V volt(24)=5.06788000V
      BATT_V volt(25)=3.01110800V
"""


def test_pmic_read_adc_pairs_rails_by_name_not_channel():
    r = parse_pmic_read_adc(PMIC)
    assert len(r.rails_w) == 12 and r.voltage_only == ("BATT", "EXT5V")
    assert r.rails_w["VDD_CORE"] == pytest.approx(10.87674 * 0.8974594)  # current(7) with volt(15)
    assert sum(r.rails_w.values()) == pytest.approx(10.7999, abs=1e-4)  # W, summed by hand from the 12 pairs


def test_pmic_read_adc_garbage_names_the_line():
    with pytest.raises(SensorError, match="not a pmic_read_adc line: 'error=1 error_msg=\"Command not registered\"'"):
        parse_pmic_read_adc(' VDD_CORE_A current(7)=0.75012000A\nerror=1 error_msg="Command not registered"\n')


# --- Android --------------------------------------------------------------------------------------------------------
# ODPM energy_value: the Pixel driver drivers/iio/power/odpm.c (e.g. GrapheneOS/kernel_google-modules_soc_gs-zumapro)
# documents "t=<Measurement timestamp, ms>" then "CH<N>(T=<Duration, ms>)[<Schematic name>], <Accumulated Energy,
# uWs>" and prints them with "t=%llu\n" and "CH%d(T=%llu)[%s], %llu\n". The channel line below is the example a
# reader of that file quotes ("CH42(T=176090328)[S2S_VDD_GPU], 168620176"); S2M_VDD_CPUCL2 is the big-core rail
# named in Google's ODPM configuration script.
ODPM = "t=176090330\nCH42(T=176090328)[S2S_VDD_GPU], 168620176\nCH3(T=176090328)[S2M_VDD_CPUCL2], 9876543\n"


def test_odpm_energy_value():
    r = parse_odpm_energy_value(ODPM)
    assert r.timestamp_ms == 176090330
    assert r.energy_uws == {"S2S_VDD_GPU": 168620176, "S2M_VDD_CPUCL2": 9876543}
    assert r.duration_ms["S2S_VDD_GPU"] == 176090328
    with pytest.raises(SensorError, match="not an ODPM channel line: 'CH1 garbage'"):
        parse_odpm_energy_value("t=1\nCH1 garbage\n")
    with pytest.raises(SensorError, match="does not start with t="):
        parse_odpm_energy_value("CH0(T=1)[X], 2\n")


def test_battery_units_and_sign_conventions():
    # power_supply ABI: current_now in uA, voltage_now in uV; "negative values are used for discharging batteries"
    # since kernel commit 05f94eb98907 (2020), while older drivers report positive or unsigned values.
    assert battery_power_w("Discharging", "-512000", "3850000") == pytest.approx(1.9712)
    assert battery_power_w("Discharging", "512000", "3850000") == pytest.approx(1.9712)
    with pytest.raises(SensorError, match="status is 'Charging'"):
        battery_power_w("Charging", "900000", "4200000")
    with pytest.raises(SensorError, match="current_now is not a number"):
        battery_power_w("Discharging", "", "3850000")


# --- NVML ------------------------------------------------------------------------------------------------------------


def test_nvidia_smi_power_lines():
    # csv,noheader,nounits rows as nvidia-smi prints them, e.g. "... 26.3, 12.73" and "[N/A]" for an unsupported
    # field (henrygd/beszel agent/gpu_test.go, TestParseNvidiaData).
    assert parse_nvidia_smi_power("0, 12.73") == (0, 12.73)
    with pytest.raises(SensorError, match=r"no power for GPU 1 \(\[N/A\]\)"):
        parse_nvidia_smi_power("1, [N/A]")
    with pytest.raises(SensorError, match="not an 'index, power.draw' line"):
        parse_nvidia_smi_power("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.")


# --- RAPL -------------------------------------------------------------------------------------------------------------


def test_rapl_counter_wraps_at_max_energy_range():
    # powercap: energy_uj counts up to max_energy_range_uj and restarts (kernel Documentation/power/powercap).
    assert list(unwrap_counter([900, 950, 20, 80], 1000)) == [900, 950, 1020, 1080]
    assert list(unwrap_counter([100, 98, 150], 1000)) == [100, 100, 152]  # a small drop is jitter, not a wrap


def test_rapl_trace_sums_package_zones_not_psys():
    power = {
        "sensor": "rapl",
        "meta": {
            "zones": [
                {"zone": "intel-rapl:0", "name": "package-0", "max_energy_range_uj": "262143328850"},
                {"zone": "intel-rapl:1", "name": "psys", "max_energy_range_uj": "262143328850"},
            ]
        },
        "samples": [[0.0, ["1000000", "5000000"]], [1.0, ["3000000", "9000000"]]],
    }
    trace = trace_from_agent(power)
    assert trace.kind == "energy" and trace.rails == ("package-0",)
    assert list(trace.values) == pytest.approx([1.0, 3.0])


# --- device state ----------------------------------------------------------------------------------------------------


def test_get_throttled_bits():
    # Bit meanings: raspberrypi.com/documentation/computers/os.html#get_throttled. "throttled=0x50005" is real
    # output of an under-powered Pi, decoded bit by bit in pastebin.com/xRpwmYYs.
    bits, names = parse_get_throttled("throttled=0x50005")
    assert bits == 0x50005
    assert names == (
        "under-voltage detected",
        "currently throttled",
        "under-voltage has occurred",
        "throttling has occurred",
    )
    assert parse_get_throttled("throttled=0x0") == (0, ())
    with pytest.raises(SensorError):
        parse_get_throttled("error=2")


def test_nvpmodel_query():
    # `nvpmodel -q` prints the mode name on a labelled line and its number on the next (jetson_stats's nvpmodel
    # emulator, rbonghi/jetson_stats tests/nvpmodel, and NVIDIA's L4T power-management guide).
    assert parse_nvpmodel_query("NV Power Mode: MAXN\n0\n") == ("MAXN", 0)
    assert parse_nvpmodel_query("NVPM WARN: fan mode is not set!\nNV Power Mode: 15W\n2") == ("15W", 2)
    with pytest.raises(SensorError):
        parse_nvpmodel_query("nvpmodel: command not found")
