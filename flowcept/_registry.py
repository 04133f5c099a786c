"""Backends registered by name: one module per backend in a package.

A backend named X is the module ``<package>.X`` exposing ``BACKEND`` (a
class).  Adding a backend is adding one file; nothing else changes.  Names
are listed without importing the modules (so `import flowcept` stays cheap
and a backend whose client library is absent still lists).
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import List


def backend_names(package: str) -> List[str]:
    pkg = importlib.import_module(package)
    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))


def load_backend(package: str, name: str, kind: str):
    names = backend_names(package)
    if name not in names:
        raise ValueError(f"unknown {kind} {name!r}: choose one of {', '.join(names)}")
    module = importlib.import_module(f"{package}.{name}")
    return module.BACKEND
