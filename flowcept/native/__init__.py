"""Loads the compiled extension and checks it matches this Python package.

Imported lazily (by the first capture, drain or read), never by
``import flowcept``.
"""
from __future__ import annotations

from flowcept.record import layout

try:
    from flowcept._flowcept_c import ffi, lib
except ImportError as e:  # pragma: no cover - only on a broken install
    raise ImportError(
        "flowcept's compiled extension (flowcept._flowcept_c) is missing: "
        "reinstall with `pip install .` from the source tree (cffi must be "
        f"available at build time). Original error: {e}") from None


def _check_abi() -> None:
    version = lib.fc_version()
    abi, fmt = version >> 16, version & 0xFFFF
    if abi != layout.ABI_VERSION or fmt != layout.FORMAT_VERSION:
        raise ImportError(
            f"flowcept extension ABI {abi}/format {fmt} does not match the Python "
            f"package ({layout.ABI_VERSION}/{layout.FORMAT_VERSION}): rebuild with `pip install .`")
    cap = 32
    descs = ffi.new("fc_field_desc[]", cap)
    n = lib.fc_layout_describe(descs, cap)
    native = [(ffi.string(d.name).decode(), d.kind.decode(),
               d.size, d.offset) for d in descs[0:n]]
    layout.check_against(native, ffi.sizeof("fc_task_record"), ffi.sizeof("fc_batch_header"))


_check_abi()

__all__ = ["ffi", "lib"]
