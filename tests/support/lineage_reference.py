"""The lineage rule of flowcept.archive.lineage walked in plain Python over an
archive's decoded payloads, one task at a time: the reference that the read
path's index (flowcept.query.lineage.LineageIndex) is checked and timed against."""
import numpy as np


def python_walk(lin, start: int, up: bool, parents: bool = True, data: bool = True) -> np.ndarray:
    """Rows of the ancestors (up) or descendants of row ``start`` of ``lin``'s
    archive (``lin``: a flowcept.archive.lineage.Lineage), sorted."""
    a = lin.a
    start_ns = a._column("start_ns")
    end_ns = a._column("end_ns")
    if data:
        used, gen, producers, consumers = lin._data_index()
    seen = {start}
    stack = [start]
    while stack:
        j = stack.pop()
        nxt = []
        if parents:
            if up:
                if lin.parent[j] >= 0:
                    nxt.append(int(lin.parent[j]))
            else:
                nxt.extend(lin.child_rows[lin.child_ptr[j]:lin.child_ptr[j + 1]].tolist())
        if data:
            if up:
                for v in used[j]:
                    p = producers.get(v)
                    if p is not None:
                        nxt.extend(p[end_ns[p] <= start_ns[j]].tolist())
            else:
                for v in gen[j]:
                    c = consumers.get(v)
                    if c is not None:
                        nxt.extend(c[start_ns[c] >= end_ns[j]].tolist())
        for k in nxt:
            if k not in seen:
                seen.add(k)
                stack.append(k)
    seen.discard(start)
    return np.array(sorted(seen), np.int64)
