"""Text summary of captured tasks: per activity, per rank, failures."""
from __future__ import annotations

from typing import List

import numpy as np

from flowcept.record.layout import STATUS_ERROR


def activity_table(activity: np.ndarray, duration_ns: np.ndarray):
    """Rows (name, count, mean, p50, p95, p99, max) with durations in ms."""
    rows = []
    if not len(activity):
        return rows
    names, inverse = np.unique(activity.astype(str), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(names) + 1))
    d_sorted = duration_ns[order] / 1e6
    for i, name in enumerate(names):
        d = d_sorted[bounds[i]:bounds[i + 1]]
        p50, p95, p99 = np.percentile(d, [50, 95, 99])
        rows.append((str(name), len(d), float(d.mean()), float(p50), float(p95), float(p99),
                     float(d.max())))
    return rows


def format_summary(records, activity, title: str = "") -> str:
    lines: List[str] = []
    n = len(records)
    if title:
        lines.append(title)
    if n == 0:
        lines.append("no task records")
        return "\n".join(lines)
    dur = (records["end_ns"] - records["start_ns"]).astype(np.int64)
    span = (records["end_ns"].max() - records["start_ns"].min()) / 1e9
    errors = int((records["status"] == STATUS_ERROR).sum())
    ranks = np.unique(records["rank"])
    lines.append(f"{n} tasks, {len(ranks)} ranks, {errors} failed, {span:.3f} s from first start to last end")
    lines.append("")
    lines.append(f"{'activity':<24}{'count':>9}{'mean ms':>10}{'p50 ms':>10}{'p95 ms':>10}"
                 f"{'p99 ms':>10}{'max ms':>10}")
    for name, count, mean, p50, p95, p99, mx in activity_table(activity, dur):
        lines.append(f"{name[:23]:<24}{count:>9}{mean:>10.3f}{p50:>10.3f}{p95:>10.3f}{p99:>10.3f}{mx:>10.3f}")
    lines.append("")
    lines.append(f"{'rank':>6}{'tasks':>9}{'busy s':>10}")
    per_rank_tasks = np.bincount(records["rank"].astype(np.int64))
    # busy time: only top-level tasks, so nested ones are not counted twice
    top = records["parent_id"] == 0
    busy = np.bincount(records["rank"][top].astype(np.int64), weights=dur[top] / 1e9,
                       minlength=len(per_rank_tasks))
    for r in ranks.tolist():
        lines.append(f"{r:>6}{per_rank_tasks[r]:>9}{busy[r]:>10.3f}")
    if len(ranks) > 1:
        b = busy[ranks]
        if b.mean() > 0:
            lines.append(f"load imbalance (max/mean busy): {b.max() / b.mean():.3f}")
    return "\n".join(lines)
