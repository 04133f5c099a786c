"""Per-task telemetry, in Flowcept's shape: CPU, memory, disk, network and
process figures at a task's start and end (``telemetry_at_start``,
``telemetry_at_end``), and GPU figures where NVML (NVIDIA) or AMD SMI is
present.  Off unless asked for; ``Telemetry(conf)`` is what an
instrumentation (Dask, torch, MCP, a caller's own task) asks for a
snapshot, and Flowcept's ``flowcept.flowceptor.telemetry_capture.
TelemetryCapture`` is this class with the settings file's
``telemetry_capture`` section.

``conf`` (or ``what``, a list of part names: ``cpu``, ``memory``,
``process``, ``gpu``, or Flowcept's keys) takes Flowcept's keys: ``cpu`` (``times_avg``, ``percent_all``,
``frequency``), ``per_cpu`` (``times_per_cpu``, ``percent_per_cpu``),
``process_info`` (this process: ``pid``, ``cpu_number``, ``memory``,
``memory_percent``, ``cpu_times``, ``cpu_percent``, ``executable``,
``cmd_line``, ``num_open_file_descriptors``, ``num_connections``,
``io_counters``, ``num_open_files``, ``num_threads``,
``num_ctx_switches``), ``mem`` (``virtual``, ``swap``), ``disk``
(``disk_usage``, ``io_sum``, ``io_per_disk``), ``network``
(``netio_sum``, ``netio_per_interface``), ``machine_info`` (for
``capture_machine_info``) and ``gpu`` (a list of what to read per visible
GPU, e.g. ``["used", "temperature", "power", "name", "id"]``; None: no GPU).
The psutil names are psutil's own (``pip install 'flowcept[telemetry]'``).
No GPU library, driver or device: ``gpu`` is left out (``gpu_error`` says
why), never an error.

Cost (benchmarks/bench_adapters.py): a snapshot of cpu+mem+process_info is
hundreds of microseconds (process_info lists connections and open files,
as Flowcept does), so it stays off unless asked for.
"""
from __future__ import annotations

import os
import platform
import socket
from typing import Any, Dict, List, Optional

PARTS = ("cpu", "per_cpu", "process_info", "mem", "disk", "network", "machine_info", "gpu")
DEFAULT = {"cpu": True, "per_cpu": False, "process_info": True, "mem": True, "disk": False,
           "network": False, "machine_info": False, "gpu": None}
_NVIDIA_FIELDS = ("used", "temperature", "power", "name", "id")
_ALIASES = {"memory": "mem", "process": "process_info"}


class Telemetry:
    """Snapshots of the machine and this process; ``capture()`` -> dict."""

    def __init__(self, conf: Optional[Dict[str, Any]] = None, *, what=None):
        if what is not None:   # part names: cpu, memory, process, gpu (or Flowcept's keys)
            conf = {_ALIASES.get(w, w): (list(_NVIDIA_FIELDS) if w == "gpu" else True) for w in what}
        conf = dict(DEFAULT if conf is None else conf)
        bad = set(conf) - set(PARTS)
        if bad:
            from flowcept.errors import ConfigError
            raise ConfigError(f"telemetry: unknown part(s) {sorted(bad)}; choose from {list(PARTS)}")
        self.conf = conf
        self.gpu_fields: Optional[List[str]] = (list(conf["gpu"]) if isinstance(conf.get("gpu"), (list, tuple))
                                                else list(_NVIDIA_FIELDS) if conf.get("gpu") else None)
        self.gpu_error: Optional[str] = None
        self.psutil_error: Optional[str] = None
        self._psutil = None
        self._proc = None
        self._gpu = None   # (vendor, handles)
        try:
            import psutil
            self._psutil = psutil
            self._proc = psutil.Process(os.getpid())
            psutil.cpu_percent(None)   # primes the since-last-call percents
            self._proc.cpu_percent(None)
        except ImportError:
            self.psutil_error = "psutil is not installed: pip install 'flowcept[telemetry]'"
        if self.gpu_fields is not None:
            self._init_gpu()

    @property
    def enabled(self) -> bool:
        return any(bool(self.conf.get(k)) for k in PARTS if k != "machine_info")

    # -- GPUs -------------------------------------------------------------
    def _init_gpu(self) -> None:
        errors = []
        try:
            import amdsmi
            amdsmi.amdsmi_init()
            handles = amdsmi.amdsmi_get_processor_handles()
            if handles:
                self._gpu = ("amd", amdsmi, list(enumerate(handles)))
                return
        except ImportError:
            errors.append("amdsmi is not installed")
        except Exception as e:   # no driver, no device, permissions
            errors.append(f"AMD SMI unavailable: {type(e).__name__}: {e}")
        try:
            import pynvml
            pynvml.nvmlInit()
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            ids = ([int(i) for i in visible.split(",") if i.strip().isdigit()] if visible
                   else list(range(pynvml.nvmlDeviceGetCount())))
            self._gpu = ("nvidia", pynvml, [(i, pynvml.nvmlDeviceGetHandleByIndex(i)) for i in ids])
            return
        except ImportError:
            errors.append("nvidia-ml-py is not installed")
        except Exception as e:
            errors.append(f"NVML unavailable: {type(e).__name__}: {e}")
        self.gpu_error = "; ".join(errors)[:300]

    def _gpu_info(self) -> Dict[str, Any]:
        vendor, lib, handles = self._gpu
        fields = set(self.gpu_fields or ())
        out = {}
        for i, h in handles:
            d: Dict[str, Any] = {}
            try:
                if vendor == "nvidia":
                    if "used" in fields:
                        d["used"] = int(lib.nvmlDeviceGetMemoryInfo(h).used)
                    if "temperature" in fields:
                        d["temperature"] = int(lib.nvmlDeviceGetTemperature(h, lib.NVML_TEMPERATURE_GPU))
                    if "power" in fields:
                        d["power"] = int(lib.nvmlDeviceGetPowerUsage(h))
                    if "name" in fields:
                        d["name"] = _text(lib.nvmlDeviceGetName(h))
                    if "id" in fields:
                        d["id"] = _text(lib.nvmlDeviceGetUUID(h))
                else:
                    d["gpu_ix"] = i
                    if "used" in fields:
                        d["used"] = lib.amdsmi_get_gpu_memory_usage(h, lib.AmdSmiMemoryType.VRAM)
                    if "activity" in fields:
                        d["activity"] = lib.amdsmi_get_gpu_activity(h)
                    if "id" in fields:
                        d["id"] = lib.amdsmi_get_gpu_device_uuid(h)
            except Exception as e:   # one query a device refuses must not lose the others
                d["error"] = f"{type(e).__name__}: {e}"[:200]
            out[f"gpu_{i}"] = d
        return out

    def shutdown_gpu(self) -> None:
        if self._gpu is None:
            return
        vendor, lib, _ = self._gpu
        try:
            lib.nvmlShutdown() if vendor == "nvidia" else lib.amdsmi_shut_down()
        except Exception:
            pass
        self._gpu = None

    # -- snapshots ----------------------------------------------------------
    def capture(self) -> Dict[str, Any]:
        """One snapshot of the configured parts (an ``error`` key instead of
        what failed: telemetry never breaks the task it describes)."""
        out: Dict[str, Any] = {}
        ps, c = self._psutil, self.conf
        try:
            if ps is not None:
                if c.get("cpu") or c.get("per_cpu"):
                    cpu: Dict[str, Any] = {}
                    if c.get("cpu"):
                        freq = ps.cpu_freq()
                        cpu.update(times_avg=ps.cpu_times(percpu=False)._asdict(),
                                   percent_all=ps.cpu_percent(), frequency=freq.current if freq else None)
                    if c.get("per_cpu"):
                        cpu.update(times_per_cpu=[t._asdict() for t in ps.cpu_times(percpu=True)],
                                   percent_per_cpu=ps.cpu_percent(percpu=True))
                    out["cpu"] = cpu
                if c.get("process_info"):
                    out["process"] = self._process()
                if c.get("mem"):
                    out["memory"] = {"virtual": ps.virtual_memory()._asdict(),
                                     "swap": ps.swap_memory()._asdict()}
                if c.get("disk"):
                    disk = {"disk_usage": ps.disk_usage("/")._asdict()}
                    io = ps.disk_io_counters(perdisk=False)
                    if io is not None:
                        disk["io_sum"] = io._asdict()
                    per = ps.disk_io_counters(perdisk=True) or {}
                    if len(per) > 1:
                        disk["io_per_disk"] = {d: v._asdict() for d, v in per.items()}
                    out["disk"] = disk
                if c.get("network"):
                    per = ps.net_io_counters(pernic=True) or {}
                    out["network"] = {"netio_sum": ps.net_io_counters(pernic=False)._asdict(),
                                      "netio_per_interface": {i: v._asdict() for i, v in per.items()
                                                              if v.bytes_sent and v.bytes_recv}}
            if self._gpu is not None:
                out["gpu"] = self._gpu_info()
        except Exception as e:
            out["error"] = f"{type(e).__name__}: {e}"[:200]
        return out

    def _process(self) -> Dict[str, Any]:
        p = self._proc
        d: Dict[str, Any] = {}
        with p.oneshot():
            d["pid"] = p.pid
            for key, get in (("cpu_number", p.cpu_num), ("memory", lambda: p.memory_info()._asdict()),
                             ("memory_percent", p.memory_percent),
                             ("cpu_times", lambda: p.cpu_times()._asdict()), ("cpu_percent", p.cpu_percent),
                             ("executable", p.exe), ("cmd_line", p.cmdline),
                             ("num_open_file_descriptors", p.num_fds),
                             ("num_connections", lambda: len(p.net_connections())),
                             ("io_counters", lambda: p.io_counters()._asdict()),
                             ("num_open_files", lambda: len(p.open_files())), ("num_threads", p.num_threads),
                             ("num_ctx_switches", lambda: p.num_ctx_switches()._asdict())):
                try:
                    d[key] = get()
                except Exception:   # not on this platform, or not allowed
                    pass
        return d

    def capture_machine_info(self) -> Optional[Dict[str, Any]]:
        """The machine (memory, disk, platform, CPU, network interfaces,
        environment, host, user, this process), when ``machine_info`` is on."""
        ps = self._psutil
        if not self.conf.get("machine_info") or ps is None:
            return None
        try:
            cpu: Dict[str, Any]
            try:
                import cpuinfo
                cpu = cpuinfo.get_cpu_info()
            except ImportError:
                cpu = {"brand_raw": platform.processor(), "count": ps.cpu_count()}
            info = {"memory": {"swap": ps.swap_memory()._asdict(), "virtual": ps.virtual_memory()._asdict()},
                    "disk": ps.disk_usage("/")._asdict(), "platform": platform.uname()._asdict(),
                    "cpu": cpu,
                    "network": {i: [a._asdict() for a in addrs] for i, addrs in ps.net_if_addrs().items()},
                    "environment": dict(os.environ), "hostname": socket.gethostname(),
                    "login_name": _login(), "process": self._process()}
            if self._gpu is not None:
                info["gpu"] = self._gpu_info()
            return info
        except Exception as e:
            return {"error": f"{type(e).__name__}: {e}"[:200]}


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _login() -> str:
    try:
        return os.getlogin()
    except OSError:
        import getpass
        return getpass.getuser()


_default: Optional[Telemetry] = None


def telemetry(enabled: bool = True) -> Optional[Telemetry]:
    """The process's shared Telemetry with the default parts (None when not
    enabled)."""
    global _default
    if not enabled:
        return None
    if _default is None:
        _default = Telemetry()
    return _default
