"""The environment a record carries: timing conditions read from this machine as it is (none
of them invented where the machine does not expose them), GPU conditions from nvidia-smi's CSV."""

from __future__ import annotations

import os

from vlc import environment


def test_timing_conditions_are_read_from_this_machine(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    found = environment.timing_conditions()
    assert set(found) == {"governor", "frequency_driver", "turbo", "smt", "cpu_quota", "thread_variables",
                          "load_average", "virtual_machine"}
    assert found["thread_variables"]["OMP_NUM_THREADS"] == "3"
    governor = environment.CPUFREQ / "scaling_governor"
    assert found["governor"] == (governor.read_text().strip() if governor.is_file() else None)
    if os.path.exists("/proc/loadavg"):
        assert len(found["load_average"]) == 3 and all(v >= 0 for v in found["load_average"])
    assert isinstance(found["virtual_machine"], bool)
    assert "timing_conditions" in environment.collect()


def test_gpu_conditions_leave_out_what_nvidia_smi_does_not_know():
    rows = environment.gpu_conditions("Enabled, 1410, 1980, 700.00\nDisabled, [N/A], 1755, 300\nnot, a row\n")
    assert rows == [{"persistence_mode": "Enabled", "sm_clock_mhz": 1410.0, "max_sm_clock_mhz": 1980.0,
                     "power_limit_w": 700.0},
                    {"persistence_mode": "Disabled", "max_sm_clock_mhz": 1755.0, "power_limit_w": 300.0}]
