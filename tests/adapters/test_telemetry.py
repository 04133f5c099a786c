"""Telemetry in Flowcept's shape (psutil), and Flowcept's TelemetryCapture."""
import os

import pytest
from adapters_support import flowcept_yaml

psutil = pytest.importorskip("psutil", reason="psutil not installed: pip install 'flowcept[telemetry]'")

ALL = {"cpu": True, "per_cpu": True, "process_info": True, "mem": True, "disk": True, "network": True,
       "machine_info": True, "gpu": None}


def test_every_part_in_flowcepts_shape():
    from flowcept.adapters.telemetry import Telemetry
    snap = Telemetry(ALL).capture()
    assert set(snap) == {"cpu", "process", "memory", "disk", "network"}
    assert set(snap["cpu"]) == {"times_avg", "percent_all", "frequency", "times_per_cpu", "percent_per_cpu"}
    assert len(snap["cpu"]["times_per_cpu"]) == psutil.cpu_count()
    p = snap["process"]
    assert p["pid"] == os.getpid() and p["memory"]["rss"] > 0 and p["num_threads"] >= 1
    assert {"cpu_times", "memory_percent", "executable", "cmd_line", "num_open_file_descriptors",
            "num_connections", "num_open_files", "num_ctx_switches"} <= set(p)
    assert set(snap["memory"]) == {"virtual", "swap"} and snap["memory"]["virtual"]["total"] > 0
    assert snap["disk"]["disk_usage"]["total"] > 0 and "netio_sum" in snap["network"]


def test_gpu_degrades_to_a_reason_and_bad_parts_fail_clearly():
    from flowcept.adapters.telemetry import Telemetry
    from flowcept.errors import ConfigError
    t = Telemetry({"cpu": True, "gpu": ["used", "temperature"]})
    snap = t.capture()
    try:
        import pynvml  # noqa: F401
        has_gpu_lib = True
    except ImportError:
        has_gpu_lib = False
    if not has_gpu_lib:
        assert "gpu" not in snap and "not installed" in t.gpu_error
    with pytest.raises(ConfigError, match="unknown part"):
        Telemetry({"cpu": True, "temperature": True})


def test_telemetry_capture_reads_flowcepts_settings(tmp_path, monkeypatch):
    from flowcept.flowceptor.telemetry_capture import TelemetryCapture
    monkeypatch.setenv("FLOWCEPT_SETTINGS_PATH", flowcept_yaml(
        tmp_path / "s.yaml", telemetry_capture={"cpu": True, "mem": True, "machine_info": True,
                                                 "process_info": False, "gpu": None}))
    tc = TelemetryCapture()
    tel = tc.capture()
    d = tel.to_dict()
    assert set(d) == {"cpu", "memory"} and tel.cpu.percent_all >= 0 and tel.memory.virtual["total"] > 0
    info = tc.capture_machine_info()
    assert info["hostname"] and info["process"]["pid"] == os.getpid() and "platform" in info
    tc.shutdown_gpu_telemetry()
    # as 1.0.3: every part off gives an empty snapshot; no section at all gives None
    assert TelemetryCapture({"cpu": False, "mem": False}).capture().to_dict() == {}
    assert TelemetryCapture(None).capture() is None
