"""Flowcept's ``flowcept.flowceptor.telemetry_capture``: ``TelemetryCapture``
with the ``telemetry_capture`` section of Flowcept's settings (implemented
in flowcept.adapters.telemetry)."""
from __future__ import annotations

from typing import Any, Dict, Optional

from flowcept.adapters import flowcept_settings
from flowcept.adapters.telemetry import Telemetry as _Snapshots

_UNSET = object()


class _Part:
    """One part of a snapshot (Flowcept's Telemetry.CPU, .Process, ...)."""

    def __init__(self, values: Dict[str, Any]):
        self.__dict__.update(values)


class Telemetry:
    """Flowcept's ``Telemetry``: parts ``cpu``, ``process``, ``memory``,
    ``disk``, ``network`` (objects) and ``gpu`` (a dict); ``to_dict()``."""

    cpu = process = memory = disk = network = None
    gpu: Optional[dict] = None

    def __init__(self, snapshot: Optional[Dict[str, Any]] = None):
        for k, v in (snapshot or {}).items():
            setattr(self, k, v if k in ("gpu", "error") else _Part(v))

    def to_dict(self) -> Dict[str, Any]:
        out = {}
        for k in ("cpu", "process", "memory", "disk", "network"):
            part = getattr(self, k)
            if part is not None:
                out[k] = dict(part.__dict__)
        if self.gpu is not None:
            out["gpu"] = self.gpu
        return out


class TelemetryCapture:
    """``TelemetryCapture(conf=settings["telemetry_capture"])``: ``capture()``
    returns a ``Telemetry`` (None when the settings have no
    ``telemetry_capture`` section), ``capture_machine_info()`` a dict."""

    def __init__(self, conf: Any = _UNSET):
        if conf is _UNSET:
            conf = flowcept_settings().get("telemetry_capture")
        self.conf = dict(conf) if conf else None
        self._snapshots = _Snapshots(self.conf) if self.conf else None

    def capture(self) -> Optional[Telemetry]:
        if self._snapshots is None:
            return None
        return Telemetry(self._snapshots.capture())

    def capture_machine_info(self) -> Optional[Dict[str, Any]]:
        return None if self._snapshots is None else self._snapshots.capture_machine_info()

    def shutdown_gpu_telemetry(self) -> None:
        if self._snapshots is not None:
            self._snapshots.shutdown_gpu()
