"""Which values of a task take part in data dependencies (the rule of
``flowcept.archive.lineage``, here for every reader of the query layer)."""
from __future__ import annotations

import math
from typing import List


def scalar_values(d) -> List:
    """The values of a used/generated dict that take part in data dependencies."""
    out = []
    if not isinstance(d, dict):
        return out
    for v in d.values():
        items = v if isinstance(v, (list, tuple)) else (v,)
        for x in items:
            if isinstance(x, bool) or x is None:
                continue
            if isinstance(x, float) and math.isnan(x):
                continue
            if isinstance(x, (str, bytes, int, float)):
                out.append(x)
    return out
