"""``flowcept report job.h5``: a text summary and two pictures.

* the summary extends flowcept.query.summary's layout (activity table, rank
  table, imbalance) with the archive's metadata, the slowest and the failed
  tasks and the throughput;
* timeline.png: one lane per rank, tasks as bars coloured by activity;
  nested tasks are drawn thinner (each level 60 % of its parent's height)
  and on top, so children stay visible; drawn as one PolyCollection per
  (activity, depth), which keeps 100k+ tasks fast;
* durations.png: per activity, a histogram of durations on a log axis.

matplotlib is optional (``pip install 'flowcept[report]'``); without it the
text summary is still printed and the pictures are skipped with a message.
"""
from __future__ import annotations

import os
from typing import List, Optional

import numpy as np

from flowcept.record.layout import STATUS_ERROR


def _fmt_s(s: float) -> str:
    if s >= 1:
        return f"{s:.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3f} ms"
    return f"{s * 1e6:.1f} us"


def summary_text(a, top: int = 5) -> str:
    """The report's text (same tables as `flowcept summary`, in ms)."""
    lines: List[str] = []
    at = a.attrs
    lines.append(f"flowcept report of {a.path}")
    lines.append(f"job {at.get('job', '')}; archive format {a.version}, written {at.get('created', '?')} "
                 f"by {at.get('producer', '?')} on {at.get('host', '?')}")
    for wid, d in sorted(a.workflows.items()):
        extra = ", ".join(f"{k} {d[k]}" for k in ("campaign_id", "user", "ranks") if k in d)
        lines.append(f"workflow {wid} {d.get('name', '')!r}" + (f" ({extra})" if extra else ""))
    n = a.n
    if n == 0:
        lines.append("no task records")
        return "\n".join(lines)
    start, end = a._column("start_ns"), a._column("end_ns")
    load = a.rank_load()
    errors = int(np.count_nonzero(a._column("status") == STATUS_ERROR))
    lines.append(f"{n} tasks, {len(load['rank'])} ranks, {errors} failed, "
                 f"{(int(end.max()) - int(start.min())) / 1e9:.3f} s from first start to last end")
    lines.append("")
    lines.append(f"{'activity':<24}{'count':>9}{'mean ms':>10}{'p50 ms':>10}{'p95 ms':>10}"
                 f"{'p99 ms':>10}{'max ms':>10}{'total s':>10}")
    for r in a.stats():
        lines.append(f"{str(r['activity'])[:23]:<24}{r['count']:>9}{r['mean_s'] * 1e3:>10.3f}"
                     f"{r['p50_s'] * 1e3:>10.3f}{r['p95_s'] * 1e3:>10.3f}{r['p99_s'] * 1e3:>10.3f}"
                     f"{r['max_s'] * 1e3:>10.3f}{r['total_s']:>10.3f}")
    lines.append("")
    lines.append(f"{'rank':>6}{'tasks':>9}{'busy s':>10}")
    for rk, cnt, busy in zip(load["rank"].tolist(), load["tasks"].tolist(), load["busy_s"].tolist()):
        lines.append(f"{rk:>6}{cnt:>9}{busy:>10.3f}")
    if len(load["rank"]) > 1 and np.isfinite(load["imbalance"]):
        lines.append(f"load imbalance (max/mean busy): {load['imbalance']:.3f}")
    tp = a.throughput(max(load["span_s"] / 20, 1e-6))
    if len(tp):
        lines.append(f"throughput: {n / max(load['span_s'], 1e-9):,.0f} tasks/s overall, "
                     f"peak {tp['per_s'].max():,.0f} tasks/s (bins of {_fmt_s(tp['t_s'][1] if len(tp) > 1 else load['span_s'])})")
    lines.append("")
    lines.append(f"slowest {min(top, n)} tasks:")
    for t in a.slowest(top):
        lines.append(f"  {t['task_id']}  {t['activity_id']:<20} rank {t['rank']:<4} "
                     f"{_fmt_s(t['ended_at'] - t['started_at'])}")
    failed = a.failed()
    if len(failed):
        lines.append(f"failed tasks ({len(failed)}):")
        for t in failed[:top]:
            err = t.get("error") or {}
            msg = f"{err.get('type', '')}: {err.get('message', '')}" if isinstance(err, dict) else str(err)
            lines.append(f"  {t['task_id']}  {t['activity_id']:<20} rank {t['rank']:<4} {msg[:80]}")
        if len(failed) > top:
            lines.append(f"  ... and {len(failed) - top} more (Archive.failed())")
    return "\n".join(lines)


def _colors(names: List[str]):
    import matplotlib
    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def _depths(a) -> np.ndarray:
    parent = a._lineage_index().parent
    depth = np.zeros(a.n, np.int64)
    p = parent.copy()
    live = p >= 0
    while live.any():
        depth[live] += 1
        p[live] = parent[p[live]]
        live = p >= 0
    return depth


def _time_unit(span_s: float):
    if span_s >= 120:
        return 60.0, "min"
    if span_s >= 1:
        return 1.0, "s"
    if span_s >= 1e-3:
        return 1e-3, "ms"
    return 1e-6, "µs"


def timeline(a, path: str, max_lanes: int = 256) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection
    from matplotlib.patches import Patch

    start, end = a._column("start_ns"), a._column("end_ns")
    rank = a._column("rank").astype(np.int64)
    act = a._column("activity")
    status = a._column("status")
    t0 = int(start.min())
    span = (int(end.max()) - t0) / 1e9
    unit, uname = _time_unit(span)
    x0 = (start - t0) / 1e9 / unit
    x1 = (end - t0) / 1e9 / unit
    ranks = np.unique(rank)
    if len(ranks) > max_lanes:
        ranks = ranks[:max_lanes]
    lane = np.full(int(rank.max()) + 1, -1, np.int64)
    lane[ranks] = np.arange(len(ranks))
    y = lane[rank]
    depth = _depths(a)
    names = a.strings.tolist()
    acts = sorted({names[i] for i in np.unique(act).tolist()})
    colors = _colors(acts)
    act_name = np.array(names, dtype=object)[act]

    height = max(3.0, min(0.35 * len(ranks) + 1.8, 24.0))
    fig, ax = plt.subplots(figsize=(13, height), dpi=110)
    dense = a.n > 5000
    for d in range(int(depth.max()) + 1):
        h = 0.8 * 0.6 ** d
        for name in acts:
            m = (depth == d) & (act_name == name) & (y >= 0)
            if not m.any():
                continue
            l, r, yy = x0[m], x1[m], y[m]
            w = np.maximum(r - l, span / unit * 1e-4)    # keep zero-length tasks visible
            verts = np.stack([np.stack([l, yy - h / 2], 1), np.stack([l + w, yy - h / 2], 1),
                              np.stack([l + w, yy + h / 2], 1), np.stack([l, yy + h / 2], 1)], 1)
            pc = PolyCollection(verts, facecolors=[colors[name]], edgecolors="none" if dense else "white",
                                linewidths=0 if dense else 0.3, antialiased=not dense, zorder=2 + d)
            ax.add_collection(pc)
    bad = (status == STATUS_ERROR) & (y >= 0)
    if bad.any():
        ax.scatter(x1[bad], y[bad], marker="x", color="black", s=30, zorder=50, label="failed")
    ax.set_xlim(0, span / unit * 1.01 if span > 0 else 1)
    ax.set_ylim(len(ranks) - 0.5, -0.5)
    ax.set_yticks(np.arange(len(ranks)))
    ax.set_yticklabels([f"rank {r}" for r in ranks.tolist()])
    if len(ranks) > 40:
        ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(20, integer=True))
        ax.set_yticklabels([])
        ax.set_ylabel("rank")
    ax.set_xlabel(f"time since first task start ({uname})")
    ax.grid(axis="x", color="0.9", zorder=0)
    ax.set_axisbelow(True)
    for s in ("top", "right"):
        ax.spines[s].set_visible(False)
    title = f"{a.attrs.get('job', '')}: {a.n:,} tasks on {len(np.unique(rank))} ranks"
    ax.set_title(title + ("  (nested tasks drawn thinner, on top)" if depth.max() > 0 else ""),
                 loc="left", fontsize=11)
    handles = [Patch(facecolor=colors[n], label=n) for n in acts]
    if bad.any():
        handles.append(plt.Line2D([], [], marker="x", color="black", linestyle="none", label="failed"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1), frameon=False,
              title="activity", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def durations(a, path: str) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dur = (a._column("end_ns").astype(np.int64) - a._column("start_ns")) / 1e9
    act = a._column("activity")
    names = a.strings.tolist()
    acts = sorted({names[i] for i in np.unique(act).tolist()})
    colors = _colors(acts)
    pos = dur[dur > 0]
    lo = pos.min() if len(pos) else 1e-9
    hi = max(dur.max(), lo * 10)
    unit, uname = _time_unit(float(np.median(pos)) * 10 if len(pos) else 1.0)
    bins = np.logspace(np.log10(lo / unit) - 0.05, np.log10(hi / unit) + 0.05, 60)
    fig, ax = plt.subplots(figsize=(10, 5.5), dpi=110)
    ids = {n: i for i, n in enumerate(names)}
    for name in acts:
        d = np.maximum(dur[act == ids[name]], lo) / unit
        p50 = np.median(d)
        ax.hist(d, bins=bins, histtype="step", linewidth=1.8, color=colors[name],
                label=f"{name}  (n={len(d):,}, p50 {p50:.3g} {uname})")
        ax.hist(d, bins=bins, histtype="stepfilled", alpha=0.12, color=colors[name])
    ax.set_xscale("log")
    ax.set_xlabel(f"task duration ({uname}, log scale)")
    ax.set_ylabel("tasks per bin")
    ax.set_title(f"{a.attrs.get('job', '')}: task durations per activity", loc="left", fontsize=11)
    ax.grid(color="0.92")
    ax.set_axisbelow(True)
    for s in ("top", "right"):
        ax.spines[s].set_visible(False)
    ax.legend(frameon=False, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def report(archive_path: str, outdir: Optional[str] = None, plots: bool = True, top: int = 5):
    """Prints nothing; returns (text, [png paths], note) for the archive."""
    from flowcept.archive import open as open_archive
    with open_archive(archive_path) as a:
        text = summary_text(a, top=top)
        written, note = [], None
        if plots and a.n:
            try:
                import matplotlib  # noqa: F401
            except ImportError:
                note = ("pictures skipped: matplotlib is not installed "
                        "(pip install 'flowcept[report]' or pip install matplotlib)")
            else:
                outdir = outdir or os.path.dirname(os.path.abspath(archive_path))
                os.makedirs(outdir, mode=0o700, exist_ok=True)
                written.append(timeline(a, os.path.join(outdir, "timeline.png")))
                written.append(durations(a, os.path.join(outdir, "durations.png")))
        return text, written, note
