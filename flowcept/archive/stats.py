"""Statistics over an archive, vectorised (no per-task Python work).

Durations are end_ns - start_ns.  Per-rank busy time counts top-level tasks
only (parent_id == 0) so nested tasks are not counted twice, as in
flowcept.query.summary.
"""
from __future__ import annotations

import numpy as np

from flowcept.record.layout import STATUS_ERROR

STATS_DTYPE = [("count", "<i8"), ("errors", "<i8"), ("mean_s", "<f8"), ("p50_s", "<f8"),
               ("p95_s", "<f8"), ("p99_s", "<f8"), ("max_s", "<f8"), ("total_s", "<f8")]


def activity_stats(archive, rows=None) -> np.ndarray:
    """Structured array, one row per activity (sorted by name): activity, count,
    errors, mean/p50/p95/p99/max/total duration in seconds."""
    act = archive._column("activity")
    start = archive._column("start_ns")
    end = archive._column("end_ns")
    status = archive._column("status")
    if rows is not None:
        rows = np.asarray(rows, np.int64)
        act, start, end, status = act[rows], start[rows], end[rows], status[rows]
    names = archive.strings
    width = max([1] + [len(s) for s in names.tolist()])
    out = []
    if len(act):
        dur = np.subtract(end, start, dtype=np.int64)
        counts = np.bincount(act)
        errors = np.bincount(act, weights=status == STATUS_ERROR, minlength=len(counts))
        totals = np.bincount(act, weights=dur, minlength=len(counts))
        present = np.flatnonzero(counts)
        if len(present) > 32:   # many activities: group by one sort
            order = np.argsort(act, kind="stable")
            bounds = np.concatenate([[0], np.cumsum(counts[present])])
            groups = ((g, dur[order[bounds[k]:bounds[k + 1]]]) for k, g in enumerate(present.tolist()))
        else:
            groups = ((g, dur if len(present) == 1 else dur[act == g]) for g in present.tolist())
        for g, d in groups:
            p50, p95, p99, mx = np.percentile(d, [50, 95, 99, 100]) / 1e9
            out.append((str(names[g]) if g < len(names) else "", int(counts[g]), int(errors[g]),
                        totals[g] / counts[g] / 1e9, p50, p95, p99, mx, totals[g] / 1e9))
    out.sort(key=lambda r: r[0])
    return np.array(out, dtype=[("activity", f"U{width}")] + STATS_DTYPE)


def rank_load(archive) -> dict:
    """{"rank", "tasks", "busy_s" (arrays, one entry per rank present),
    "imbalance" (max busy / mean busy, 1.0 = balanced), "span_s"}."""
    rank = archive._column("rank").astype(np.int64)
    if not len(rank):
        return {"rank": np.zeros(0, np.int64), "tasks": np.zeros(0, np.int64),
                "busy_s": np.zeros(0), "imbalance": float("nan"), "span_s": 0.0}
    start = archive._column("start_ns")
    end = archive._column("end_ns")
    top = archive._column("parent_id") == 0
    dur = (end.astype(np.int64) - start.astype(np.int64)) / 1e9
    tasks = np.bincount(rank)
    busy = np.bincount(rank[top], weights=dur[top], minlength=len(tasks))
    ranks = np.flatnonzero(tasks)
    b = busy[ranks]
    mean = b.mean() if len(b) else 0.0
    return {"rank": ranks, "tasks": tasks[ranks], "busy_s": b,
            "imbalance": float(b.max() / mean) if mean > 0 else float("nan"),
            "span_s": float(end.max() - start.min()) / 1e9}


def throughput(archive, bin_s: float = 1.0) -> np.ndarray:
    """Tasks finished per bin of bin_s seconds from the first start: t_s, count, per_s."""
    if bin_s <= 0:
        raise ValueError(f"bin_s must be > 0, got {bin_s}")
    dt = [("t_s", "<f8"), ("count", "<i8"), ("per_s", "<f8")]
    end = archive._column("end_ns")
    if not len(end):
        return np.zeros(0, dt)
    t0 = int(archive._column("start_ns").min())
    rel = (end.astype(np.int64) - t0) / 1e9
    nbins = max(1, int(np.floor(rel.max() / bin_s)) + 1)
    counts = np.bincount(np.clip((rel // bin_s).astype(np.int64), 0, None), minlength=nbins)
    out = np.zeros(len(counts), dt)
    out["t_s"] = np.arange(len(counts)) * bin_s
    out["count"] = counts
    out["per_s"] = counts / bin_s
    return out
