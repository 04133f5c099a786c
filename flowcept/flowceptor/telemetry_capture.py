"""Flowcept's ``flowcept.flowceptor.telemetry_capture`` import path:
``TelemetryCapture`` over the engine's telemetry (flowcept.adapters.telemetry),
with the parts Flowcept's ``telemetry_capture`` settings select."""
from __future__ import annotations

import os
import platform
import socket
from typing import Any, Dict, Optional

from flowcept.compat.settings import telemetry_parts as selected_parts  # noqa: E402


class TelemetryCapture:
    """``capture()``: a snapshot dict of the selected parts (None when
    telemetry_capture is not set); ``capture_machine_info()``: the node."""

    def __init__(self, conf: Optional[Dict[str, Any]] = None):
        if conf is None:
            from flowcept.compat import settings
            conf = settings.load().constants()["TELEMETRY_CAPTURE"]
        self.conf = conf
        self._telemetry = None

    def capture(self) -> Optional[Dict[str, Any]]:
        if not self.conf:
            return None
        parts = selected_parts(self.conf)
        if not parts:
            return {}
        if self._telemetry is None:
            from flowcept.adapters.telemetry import Telemetry
            self._telemetry = Telemetry(what=parts)
        return self._telemetry.capture()

    def capture_machine_info(self) -> Dict[str, Any]:
        info: Dict[str, Any] = {"hostname": socket.gethostname(), "platform": platform.platform(),
                                "cpu_count": os.cpu_count()}
        try:
            import psutil
            info["memory_total"] = psutil.virtual_memory().total
            info["disk_total"] = psutil.disk_usage("/").total
        except Exception:   # psutil missing: what the standard library knows
            pass
        return info
