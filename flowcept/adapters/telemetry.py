"""Per-task telemetry (Flowcept's ``telemetry_capture``): CPU, memory and
process figures at a task's start and end, and GPU figures where NVML is
present.  Off by default; ``Telemetry(...)`` is what an instrumentation
(torch, Dask, MCP, or a caller's own FlowceptTask) asks for a snapshot.

* psutil (``pip install 'flowcept[telemetry]'``): system CPU percent since
  the previous snapshot, per-CPU counts, load average, virtual memory and
  swap, this process's RSS, CPU times, threads and open files count;
* nvidia-ml-py (``import pynvml``): per GPU used memory, utilisation,
  temperature and power.  Absent library, no driver or no GPU: the ``gpu``
  part is simply left out (``gpu_error`` says why, once), never an error.

Cost (measured by benchmarks/bench_adapters.py on the development machine)
is stated there; it is tens of microseconds per snapshot, so it stays off
unless asked for.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional

_WHAT = ("cpu", "memory", "process", "gpu")


class Telemetry:
    """Snapshots of the machine and this process; ``capture()`` -> dict."""

    def __init__(self, what=_WHAT):
        bad = set(what) - set(_WHAT)
        if bad:
            from flowcept.errors import ConfigError
            raise ConfigError(f"telemetry: unknown part(s) {sorted(bad)}; choose from {list(_WHAT)}")
        self.what = tuple(what)
        self.gpu_error: Optional[str] = None
        self._proc = None
        self._psutil = None
        self._nvml = None
        self._gpus = None
        try:
            import psutil
            self._psutil = psutil
            self._proc = psutil.Process(os.getpid())
            psutil.cpu_percent(None)   # primes the since-last-call percent
        except ImportError:
            self.psutil_error = "psutil is not installed: pip install 'flowcept[telemetry]'"
        else:
            self.psutil_error = None
        if "gpu" in self.what:
            self._init_gpu()

    def _init_gpu(self) -> None:
        try:
            import pynvml
            pynvml.nvmlInit()
            n = pynvml.nvmlDeviceGetCount()
            self._gpus = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(n)]
            self._nvml = pynvml
        except ImportError:
            self.gpu_error = "nvidia-ml-py is not installed"
        except Exception as e:   # no driver, no device, permissions
            self.gpu_error = f"NVML unavailable: {type(e).__name__}: {e}"[:200]

    def capture(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        ps = self._psutil
        try:
            if ps is not None:
                if "cpu" in self.what:
                    out["cpu"] = {"percent": ps.cpu_percent(None), "count": ps.cpu_count(),
                                  "load_avg": list(os.getloadavg())}
                if "memory" in self.what:
                    vm, sw = ps.virtual_memory(), ps.swap_memory()
                    out["memory"] = {"total": vm.total, "available": vm.available,
                                     "used": vm.used, "percent": vm.percent,
                                     "swap_used": sw.used, "swap_percent": sw.percent}
                if "process" in self.what:
                    p = self._proc
                    with p.oneshot():
                        ct = p.cpu_times()
                        out["process"] = {"pid": p.pid, "rss": p.memory_info().rss,
                                          "cpu_user": ct.user, "cpu_system": ct.system,
                                          "threads": p.num_threads(),
                                          "open_files": p.num_fds() if hasattr(p, "num_fds") else None}
            if self._nvml is not None:
                out["gpu"] = [self._gpu(h) for h in self._gpus]
        except Exception as e:   # telemetry never breaks the task it describes
            out["error"] = f"{type(e).__name__}: {e}"[:200]
        return out

    def _gpu(self, h) -> Dict[str, Any]:
        nv = self._nvml
        mem = nv.nvmlDeviceGetMemoryInfo(h)
        util = nv.nvmlDeviceGetUtilizationRates(h)
        d = {"used": int(mem.used), "total": int(mem.total), "gpu_util": int(util.gpu),
             "mem_util": int(util.memory)}
        try:
            d["temperature"] = int(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))
            d["power_mw"] = int(nv.nvmlDeviceGetPowerUsage(h))
        except Exception:
            pass
        return d


_default: Optional[Telemetry] = None


def telemetry(enabled: bool = True) -> Optional[Telemetry]:
    """The process's shared Telemetry (None when not enabled)."""
    global _default
    if not enabled:
        return None
    if _default is None:
        _default = Telemetry()
    return _default
