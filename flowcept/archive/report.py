"""``flowcept report job.h5``: a text summary, and one self-contained HTML file
per job (in the spirit of darshan-job-summary) written beside the archive.

The HTML file (``<archive>.report.html``) holds, with its pictures inline
(PNG as data: URIs; no script, no font, nothing fetched):

* the archive's metadata and workflows, and summary figures;
* per activity: count, failures, duration percentiles (each in a unit that
  fits it: ns, µs, ms, s, min, h);
* the timeline: one lane per rank (ranks grouped when there are more than
  MAX_LANES), drawn as a raster of ``TIMELINE_PX`` time columns.  Each
  column of a lane takes the colour of the activity that covered most of
  it, brighter the busier it was; nested tasks are drawn in narrower bands
  on top.  Failures are a strip above each lane, one pixel column per time
  column, its colour the share of the tasks ending there that failed, so
  8,000 failures among 150,000 tasks stay readable where one mark per
  failure would merge into a solid bar;
* task durations per activity (log scale), tasks finished and failed over
  time, busy time per rank (top-level tasks) and the imbalance;
* failures grouped by activity and error (digits folded, so "row 12" and
  "row 13" are one group), with the ranks they hit and an example, then the
  first failed tasks with what they used;
* the slowest tasks and the slowest chain: the path through data
  dependencies (a task used a value an earlier task generated; rule in
  flowcept.archive.lineage) whose durations add up to the most.

matplotlib is optional (``pip install 'flowcept[report]'``); without it the
HTML file has the tables and says the pictures were skipped.
"""
from __future__ import annotations

import base64
import html
import io
import os
import re
from typing import Dict, List, Optional, Tuple

import numpy as np

from flowcept.archive.lineage import find_rows, scalar_values
from flowcept.record.layout import STATUS_ERROR

TIMELINE_PX = 1200     # time columns of the timeline raster
MAX_LANES = 256        # more ranks than this share lanes
MAX_DEPTH_BANDS = 4    # nesting levels drawn as separate bands
MAX_ACTIVITY_COLORS = 19   # the rest are drawn as "other"
FAILURE_GROUPS = 25
SUFFIX = ".report.html"


# -- units --------------------------------------------------------------------------------------
_UNITS = ((3600.0, "h"), (60.0, "min"), (1.0, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns"))


def fmt_duration(s: float) -> str:
    """A duration in the unit that fits it, three significant digits:
    0.000456 -> "456 µs", 75 -> "1.25 min"."""
    if s is None or not np.isfinite(s):
        return "–"
    if s == 0:
        return "0 s"
    for scale, name in _UNITS:
        if abs(s) >= scale * 0.9995:   # 0.99996 s is "1 s", not "1e+03 ms"
            return f"{s / scale:.3g} {name}"
    return f"{s / 1e-9:.3g} ns"


def time_unit(span_s: float) -> Tuple[float, str]:
    """(seconds per unit, unit name) for an axis spanning span_s."""
    if span_s >= 7200:
        return 3600.0, "h"
    if span_s >= 120:
        return 60.0, "min"
    if span_s >= 1:
        return 1.0, "s"
    if span_s >= 1e-3:
        return 1e-3, "ms"
    if span_s >= 1e-6:
        return 1e-6, "µs"
    return 1e-9, "ns"


# -- the text summary ---------------------------------------------------------------------------
def summary_text(a, top: int = 5) -> str:
    """The report's text (the tables of `flowcept summary`, durations in units that fit)."""
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
                 f"{fmt_duration((int(end.max()) - int(start.min())) / 1e9)} from first start to last end")
    lines.append("")
    lines.append(f"{'activity':<24}{'count':>9}{'failed':>8}{'mean':>11}{'p50':>11}{'p95':>11}"
                 f"{'p99':>11}{'max':>11}{'total':>11}")
    for r in a.stats():
        lines.append(f"{str(r['activity'])[:23]:<24}{r['count']:>9}{r['errors']:>8}"
                     + "".join(f"{fmt_duration(r[k]):>11}" for k in ("mean_s", "p50_s", "p95_s", "p99_s",
                                                                     "max_s", "total_s")))
    lines.append("")
    lines.append(f"{'rank':>6}{'tasks':>9}{'busy':>11}")
    shown = _rank_rows(load)
    for rk, cnt, busy in shown:
        lines.append(f"{rk:>6}{cnt:>9}{fmt_duration(busy):>11}")
    if len(shown) < len(load["rank"]):
        lines.append(f"  ({len(load['rank']) - len(shown)} more ranks; the HTML report plots them all)")
    if len(load["rank"]) > 1 and np.isfinite(load["imbalance"]):
        lines.append(f"load imbalance (max/mean busy): {load['imbalance']:.3f}")
    tp = a.throughput(max(load["span_s"] / 20, 1e-6))
    if len(tp):
        lines.append(f"throughput: {n / max(load['span_s'], 1e-9):,.0f} tasks/s overall, "
                     f"peak {tp['per_s'].max():,.0f} tasks/s (bins of "
                     f"{fmt_duration(tp['t_s'][1] if len(tp) > 1 else load['span_s'])})")
    lines.append("")
    lines.append(f"slowest {min(top, n)} tasks:")
    for t in a.slowest(top):
        lines.append(f"  {t['task_id']}  {t['activity_id']:<20} rank {t['rank']:<4} "
                     f"{fmt_duration(t['ended_at'] - t['started_at'])}")
    nfail = len(a.failed())
    if nfail:
        lines.append(f"failed tasks ({nfail}):")
        for t in _head(a, a.failed(), top):
            lines.append(f"  {t['task_id']}  {t['activity_id']:<20} rank {t['rank']:<4} {_error_text(t)[:80]}")
        if nfail > top:
            lines.append(f"  ... and {nfail - top} more (Archive.failed(); the HTML report groups them)")
    return "\n".join(lines)


def _head(a, sel, k: int) -> List[dict]:
    """The first k documents of a Selection without materialising the rest."""
    from flowcept.archive.hdf5 import Selection
    rows = np.asarray(sel)[:k]
    return Selection(a, rows).to_list()


def _rank_rows(load, k: int = 32):
    rows = list(zip(load["rank"].tolist(), load["tasks"].tolist(), load["busy_s"].tolist()))
    if len(rows) <= k:
        return rows
    order = np.argsort(-load["busy_s"], kind="stable")
    pick = sorted(set(order[:k // 2].tolist()) | set(order[-(k // 2):].tolist()))
    return [rows[i] for i in pick]


def _error_text(t: dict) -> str:
    err = t.get("error") or {}
    if isinstance(err, dict):
        return f"{err.get('type', '')}: {err.get('message', '')}".strip(": ")
    return str(err)


# -- figures ---------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _png(fig) -> str:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _palette(names: List[str]) -> Dict[str, tuple]:
    import matplotlib
    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    colors = {n: cmap(i % cmap.N)[:3] for i, n in enumerate(names[:MAX_ACTIVITY_COLORS])}
    if len(names) > MAX_ACTIVITY_COLORS:
        colors["other"] = (0.55, 0.55, 0.55)
    return colors


def _depths(a) -> np.ndarray:
    parent = a._links().parent
    depth = np.zeros(a.n, np.int64)
    p = parent.copy()
    live = p >= 0
    while live.any():
        depth[live] += 1
        p[live] = parent[p[live]]
        live = p >= 0
    return depth


def _coverage(lane, x0, x1, lanes: int, width: int) -> np.ndarray:
    """How much of each (lane, pixel column) the intervals [x0, x1) cover (0..n)."""
    cov = np.zeros((lanes, width + 1))
    c0 = np.clip(np.floor(x0).astype(np.int64), 0, width - 1)
    c1 = np.clip(np.floor(x1).astype(np.int64), 0, width - 1)
    same = c0 == c1
    np.add.at(cov, (lane[same], c0[same]), np.maximum(x1[same] - x0[same], 1e-3))
    d = ~same
    np.add.at(cov, (lane[d], c0[d]), c0[d] + 1 - x0[d])
    np.add.at(cov, (lane[d], c1[d]), x1[d] - c1[d])
    full = np.zeros((lanes, width + 1))
    np.add.at(full, (lane[d], c0[d] + 1), 1.0)
    np.add.at(full, (lane[d], c1[d]), -1.0)
    return (cov + np.cumsum(full, axis=1))[:, :width]


def timeline_raster(a, width: int = TIMELINE_PX, max_lanes: int = MAX_LANES):
    """The timeline as arrays: {"image" (rows, width, 3) floats in 0..1, "lanes"
    (rank of each lane's first rank), "group" (ranks per lane), "rows_per_lane",
    "fail" (lanes, width) failures per column, "ended" (lanes, width) tasks
    ending per column, "span_s", "colors" (activity -> rgb)}."""
    start, end = a._column("start_ns").astype(np.int64), a._column("end_ns").astype(np.int64)
    rank = a._column("rank").astype(np.int64)
    status = a._column("status")
    t0 = int(start.min())
    span = max(int(end.max()) - t0, 1)
    x0 = (start - t0) / span * width
    x1 = (end - t0) / span * width
    ranks = np.unique(rank)
    group = max(1, -(-len(ranks) // max_lanes))
    lane_of_rank = np.searchsorted(ranks, rank) // group
    lanes = int(lane_of_rank.max()) + 1
    names = a.strings.tolist()
    act = a._column("activity")
    counts = np.bincount(act, minlength=len(names))
    by_count = [names[i] for i in np.argsort(-counts, kind="stable") if counts[i]]
    colors = _palette(sorted(by_count[:MAX_ACTIVITY_COLORS]) + by_count[MAX_ACTIVITY_COLORS:])
    color_ids = {n: k for k, n in enumerate(colors)}
    act_color = np.array([color_ids.get(n, color_ids.get("other", 0)) for n in names], np.int64)
    task_color = act_color[act] if len(names) else np.zeros(a.n, np.int64)
    rgb = np.array([colors[n] for n in colors])
    depth = np.minimum(_depths(a), MAX_DEPTH_BANDS - 1)

    rows = 12 if lanes <= 32 else 6 if lanes <= 96 else 3
    fail_rows = 2 if rows >= 6 else 1
    per_lane = fail_rows + rows + 1            # failure strip, bands, a blank separator
    img = np.ones((lanes * per_lane, width, 3))
    for d in range(int(depth.max()) + 1):
        m = depth == d
        band = max(1, int(round(rows * 0.85 * 0.6 ** d)))
        top = (rows - band) // 2
        covs = np.stack([_coverage(lane_of_rank[m & (task_color == c)], x0[m & (task_color == c)],
                                   x1[m & (task_color == c)], lanes, width) for c in range(len(rgb))])
        total = covs.sum(axis=0) / group
        where = total > 0
        win = covs.argmax(axis=0)
        alpha = np.where(where, 0.45 + 0.55 * np.minimum(total, 1.0), 0.0)[..., None]
        shade = rgb[win] * alpha + (1 - alpha)
        for k in range(band):
            r = np.arange(lanes) * per_lane + fail_rows + top + k
            img[r] = np.where(where[..., None], shade, img[r])
    col = np.clip(np.floor(x1).astype(np.int64), 0, width - 1)
    ended = np.zeros((lanes, width))
    np.add.at(ended, (lane_of_rank, col), 1)
    bad = status == STATUS_ERROR
    fail = np.zeros((lanes, width))
    np.add.at(fail, (lane_of_rank[bad], col[bad]), 1)
    share = np.divide(fail, ended, out=np.zeros_like(fail), where=ended > 0)
    red = np.array([0.80, 0.0, 0.0])
    alpha = np.where(fail > 0, 0.25 + 0.75 * share, 0.0)[..., None]
    strip = red * alpha + (1 - alpha)
    for k in range(fail_rows):
        img[np.arange(lanes) * per_lane + k] = strip
    return {"image": img, "lanes": ranks[::group][:lanes], "group": group, "rows_per_lane": per_lane,
            "fail": fail, "ended": ended, "span_s": span / 1e9, "colors": colors,
            "fail_rows": fail_rows}


def timeline_figure(a, r: Optional[dict] = None) -> str:
    """The timeline picture (a data: URI)."""
    from matplotlib.patches import Patch
    plt = _pyplot()
    r = r or timeline_raster(a)
    lanes = len(r["lanes"])
    unit, uname = time_unit(r["span_s"])
    height = max(2.6, min(0.32 * lanes + 1.9, 16.0))
    fig, ax = plt.subplots(figsize=(14, height), dpi=100)
    ax.imshow(r["image"], aspect="auto", interpolation="nearest",
              extent=(0, r["span_s"] / unit, lanes, 0))
    ax.set_xlabel(f"time since the first task started ({uname})")
    if lanes <= 40:
        ax.set_yticks(np.arange(lanes) + 0.5)
        ax.set_yticklabels([f"rank {x}" if r["group"] == 1 else f"ranks {x}-{x + r['group'] - 1}"
                            for x in r["lanes"].tolist()], fontsize=8)
    else:
        ticks = np.linspace(0, lanes - 1, 9).astype(int)
        ax.set_yticks(ticks + 0.5)
        ax.set_yticklabels([str(r["lanes"][t]) for t in ticks], fontsize=8)
        ax.set_ylabel("rank" + (f" (lanes of {r['group']} ranks)" if r["group"] > 1 else ""))
    for s in ("top", "right"):
        ax.spines[s].set_visible(False)
    nfail = int(r["fail"].sum())
    ax.set_title(f"{a.n:,} tasks; each lane: failure strip (red: share of the tasks ending there "
                 f"that failed; {nfail:,} failed), then the activities (nested tasks narrower, on top)",
                 loc="left", fontsize=9)
    handles = [Patch(facecolor=c, label=n) for n, c in r["colors"].items()]
    handles.append(Patch(facecolor=(0.8, 0.0, 0.0), label="failed (share)"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1), frameon=False,
              title="activity", fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _duration_axis(ax) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: fmt_duration(v)))


def durations_figure(a) -> str:
    plt = _pyplot()
    dur = (a._column("end_ns").astype(np.int64) - a._column("start_ns")) / 1e9
    act = a._column("activity")
    names = a.strings.tolist()
    present = [n for n in sorted({names[i] for i in np.unique(act).tolist()})]
    counts = {n: int(np.count_nonzero(act == names.index(n))) for n in present}
    shown = sorted(present, key=lambda n: -counts[n])[:MAX_ACTIVITY_COLORS]
    colors = _palette(sorted(shown))
    pos = dur[dur > 0]
    lo = float(pos.min()) if len(pos) else 1e-9
    hi = max(float(dur.max()), lo * 10)
    bins = np.logspace(np.log10(lo) - 0.05, np.log10(hi) + 0.05, 60)
    fig, ax = plt.subplots(figsize=(14, 4.8), dpi=100)
    ids = {n: i for i, n in enumerate(names)}
    for name in sorted(shown):
        d = np.maximum(dur[act == ids[name]], lo)
        ax.hist(d, bins=bins, histtype="step", linewidth=1.6, color=colors[name],
                label=f"{name}  (n={len(d):,}, p50 {fmt_duration(float(np.median(d)))}, "
                      f"p99 {fmt_duration(float(np.percentile(d, 99)))})")
        ax.hist(d, bins=bins, histtype="stepfilled", alpha=0.10, color=colors[name])
    _duration_axis(ax)
    ax.set_xlabel("task duration (log scale)")
    ax.set_ylabel("tasks per bin")
    if len(shown) < len(present):
        ax.set_title(f"the {len(shown)} most frequent of {len(present)} activities", loc="left", fontsize=9)
    ax.grid(color="0.92")
    ax.set_axisbelow(True)
    for s in ("top", "right"):
        ax.spines[s].set_visible(False)
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.005, 1))
    fig.tight_layout()
    return _png(fig)


def activity_figure(a) -> str:
    """Tasks finished and failed over time."""
    plt = _pyplot()
    start, end = a._column("start_ns").astype(np.int64), a._column("end_ns").astype(np.int64)
    t0 = int(start.min())
    span = max((int(end.max()) - t0) / 1e9, 1e-9)
    unit, uname = time_unit(span)
    nb = 200
    rel = (end - t0) / 1e9
    edges = np.linspace(0, span, nb + 1)
    done, _ = np.histogram(rel, edges)
    bad, _ = np.histogram(rel[a._column("status") == STATUS_ERROR], edges)
    width = span / nb
    fig, ax = plt.subplots(figsize=(14, 3.2), dpi=100)
    x = edges[:-1] / unit
    ax.fill_between(x, done / width, step="post", color="0.55", alpha=0.5, label="tasks finished / s")
    if bad.any():
        ax.step(x, bad / width, where="post", color=(0.8, 0, 0), linewidth=1.2, label="tasks failed / s")
    ax.set_xlabel(f"time since the first task started ({uname})")
    ax.set_ylabel("per second")
    ax.set_xlim(0, span / unit)
    ax.grid(color="0.92")
    ax.set_axisbelow(True)
    for s in ("top", "right"):
        ax.spines[s].set_visible(False)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return _png(fig)


def load_figure(load) -> str:
    """Busy time per rank (top-level tasks), or its spread when ranks are many."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(14, 3.2), dpi=100)
    busy = load["busy_s"]
    unit, uname = time_unit(float(busy.max()) if len(busy) else 1.0)
    if len(busy) <= 512:
        from matplotlib.ticker import MaxNLocator
        ax.bar(load["rank"], busy / unit, width=0.8, color=(0.25, 0.45, 0.7))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("rank")
    else:
        order = np.sort(busy)[::-1]
        ax.plot(np.arange(len(order)), order / unit, color=(0.25, 0.45, 0.7))
        ax.set_xlabel("ranks, busiest first")
    if len(busy):
        ax.axhline(busy.mean() / unit, color="0.3", linestyle="--", linewidth=1, label="mean")
        ax.legend(frameon=False, fontsize=8)
    ax.set_ylabel(f"busy ({uname})")
    ax.grid(axis="y", color="0.92")
    ax.set_axisbelow(True)
    for s in ("top", "right"):
        ax.spines[s].set_visible(False)
    fig.tight_layout()
    return _png(fig)


# -- failures and the slowest chain -----------------------------------------------------------------
_DIGITS = re.compile(r"\d+")


def failure_groups(a, limit: int = FAILURE_GROUPS) -> Tuple[List[dict], int]:
    """Failed tasks grouped by (activity, error type, message with digits as #):
    [{activity, type, message (an example), count, ranks, first_s, last_s,
    task_id (the first)}], most frequent first, and the number of groups."""
    from flowcept.archive.hdf5 import Selection
    rows = np.flatnonzero(a._column("status") == STATUS_ERROR)
    if not len(rows):
        return [], 0
    start = a._column("start_ns").astype(np.int64)
    t0 = int(start.min())
    groups: Dict[tuple, dict] = {}
    docs = Selection(a, rows).to_list()
    for d in docs:
        err = d.get("error") if isinstance(d.get("error"), dict) else {"message": d.get("error")}
        etype = str(err.get("type") or "")
        msg = str(err.get("message") or "")
        key = (d["activity_id"], etype, _DIGITS.sub("#", msg)[:200])
        g = groups.get(key)
        t = (d["start_ns"] - t0) / 1e9
        if g is None:
            g = groups[key] = {"activity": d["activity_id"], "type": etype, "message": msg, "count": 0,
                               "ranks": set(), "first_s": t, "last_s": t, "task_id": d["task_id"]}
        g["count"] += 1
        g["ranks"].add(int(d["rank"]))
        g["first_s"], g["last_s"] = min(g["first_s"], t), max(g["last_s"], t)
    out = sorted(groups.values(), key=lambda g: (-g["count"], g["activity"], g["type"]))
    return out[:limit], len(out)


def _ranks_text(ranks) -> str:
    """{0,1,2,3,7} -> "0-3, 7" (cut after 12 runs)."""
    rs = sorted(ranks)
    runs, i = [], 0
    while i < len(rs):
        j = i
        while j + 1 < len(rs) and rs[j + 1] == rs[j] + 1:
            j += 1
        runs.append(str(rs[i]) if i == j else f"{rs[i]}-{rs[j]}")
        i = j + 1
    return ", ".join(runs[:12]) + (f", … ({len(rs)} ranks)" if len(runs) > 12 else "")


def slowest_chain(a) -> List[Tuple[int, object]]:
    """The chain of tasks linked by data dependencies (B used a value A
    generated, A ended before B started) whose durations add up to the most,
    as [(row, linking value or None)], first task first.  One pass in time
    order: at a task's start the best chain ending in a producer of each value
    it used is known; ties at equal times count the producer (end <= start).
    Without any data dependency it is the slowest task alone.  Tasks that
    enclose others (a parent, e.g. a whole-pipeline task) are left out: their
    time is their children's, counted already."""
    n = a.n
    if n == 0:
        return []
    start = a._column("start_ns").astype(np.int64)
    end = a._column("end_ns").astype(np.int64)
    dur = (end - start).astype(np.float64)
    wf = a._column("workflow_id").astype(np.uint64)
    pid = a._column("parent_id").astype(np.uint64)
    has_parent = pid != 0
    parent_rows = find_rows(wf, a._column("task_id").astype(np.uint64), wf[has_parent], pid[has_parent])
    enclosing = np.zeros(n, bool)
    enclosing[parent_rows[parent_rows >= 0]] = True
    if enclosing.all():
        enclosing[:] = False
    dur[enclosing] = -np.inf      # never part of a chain (nor the slowest task alone)
    docs = a.decoded_payloads()
    best = dur.copy()
    prev = np.full(n, -1, np.int64)
    link: Dict[int, object] = {}
    best_of_value: Dict[object, Tuple[float, int]] = {}
    # events: (time, 0 = an end, 1 = a start, row): ends first at equal times
    events = np.concatenate([np.stack([end, np.zeros(n, np.int64), np.arange(n)], 1),
                             np.stack([start, np.ones(n, np.int64), np.arange(n)], 1)])
    events = events[np.lexsort((events[:, 2], events[:, 1], events[:, 0]))]
    for _t, kind, row in events.tolist():
        if enclosing[row]:
            continue
        d = docs[row] if isinstance(docs[row], dict) else {}
        if kind == 1:
            for v in scalar_values(d.get("used")):
                got = best_of_value.get(v)
                if got is not None and got[1] != row and got[0] + dur[row] > best[row]:
                    best[row], prev[row], link[row] = got[0] + dur[row], got[1], v
        else:
            for v in scalar_values(d.get("generated")):
                got = best_of_value.get(v)
                if got is None or best[row] > got[0]:
                    best_of_value[v] = (float(best[row]), row)
    last = int(np.argmax(best))
    chain = []
    seen = set()
    while last >= 0 and last not in seen:
        seen.add(last)
        chain.append((last, link.get(last)))
        last = int(prev[last])
    return chain[::-1]


# -- the HTML page ---------------------------------------------------------------------------------
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1440px;padding:0 16px;color:#1d1d1f}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;
padding-bottom:4px}.meta{color:#555}.cards{display:flex;flex-wrap:wrap;gap:10px;margin:14px 0}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:120px}
.card b{display:block;font-size:20px}.card.bad b{color:#b00}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border-bottom:1px solid #eee;padding:3px 10px;text-align:left;vertical-align:top}
th{background:#f6f6f6;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;display:block}code{font-size:12px}.note{color:#666;font-size:12px}
"""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _table(head: List[str], rows: List[list], numeric: Tuple[int, ...] = ()) -> str:
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td class=n>{_e(v)}</td>" if i in numeric else f"<td>{_e(v)}</td>"
                                    for i, v in enumerate(r)) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _short(v, n: int = 120) -> str:
    import json
    text = v if isinstance(v, str) else json.dumps(v, default=str)
    return text if len(text) <= n else text[:n] + "…"


def html_report(a, top: int = 10, plots: bool = True) -> Tuple[str, Optional[str]]:
    """(the HTML page, a note when pictures were skipped)."""
    from flowcept.archive.hdf5 import Selection
    at = a.attrs
    job = at.get("job", "") or os.path.basename(a.path)
    parts = [f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>flowcept report: "
             f"{_e(job)}</title><style>{CSS}</style></head><body>",
             f"<h1>flowcept job report: {_e(job)}</h1>",
             f"<div class=meta>{_e(os.path.abspath(a.path))}; archive format {_e(a.version)}, written "
             f"{_e(at.get('created', '?'))} by {_e(at.get('producer', '?'))} on {_e(at.get('host', '?'))}"
             "</div>"]
    note = None
    if a.workflows:
        parts.append(_table(["workflow", "name", "campaign", "user", "ranks"],
                            [[w, d.get("name", ""), d.get("campaign_id", ""), d.get("user", ""), d.get("ranks", "")]
                             for w, d in sorted(a.workflows.items())]))
    if a.n == 0:
        parts.append("<p>No task records.</p></body></html>")
        return "\n".join(parts), None
    start, end = a._column("start_ns").astype(np.int64), a._column("end_ns").astype(np.int64)
    status = a._column("status")
    load = a.rank_load()
    nfail = int(np.count_nonzero(status == STATUS_ERROR))
    span = (int(end.max()) - int(start.min())) / 1e9
    hosts = len(np.unique(a._column("node")))
    cards = [("tasks", f"{a.n:,}"), ("ranks", f"{len(load['rank']):,}"), ("nodes", f"{hosts:,}"),
             ("failed", f"{nfail:,}"), ("span", fmt_duration(span)),
             ("tasks / s", f"{a.n / max(span, 1e-9):,.0f}")]
    if len(load["rank"]) > 1 and np.isfinite(load["imbalance"]):
        cards.append(("imbalance (max/mean busy)", f"{load['imbalance']:.2f}"))
    parts.append("<div class=cards>" + "".join(
        f"<div class='card{' bad' if k == 'failed' and nfail else ''}'><b>{_e(v)}</b>{_e(k)}</div>"
        for k, v in cards) + "</div>")

    parts.append("<h2>Activities</h2>")
    parts.append(_table(["activity", "count", "failed", "mean", "p50", "p95", "p99", "max", "total"],
                        [[r["activity"], f"{r['count']:,}", f"{r['errors']:,}"]
                         + [fmt_duration(r[k]) for k in ("mean_s", "p50_s", "p95_s", "p99_s", "max_s", "total_s")]
                         for r in a.stats()], numeric=tuple(range(1, 9))))

    pictures = plots
    if plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            pictures = False
            note = ("pictures skipped: matplotlib is not installed (pip install 'flowcept[report]' "
                    "or pip install matplotlib)")
    if pictures:
        parts.append("<h2>Timeline</h2>")
        parts.append(f"<img alt='timeline' src='{timeline_figure(a)}'>")
        parts.append("<p class=note>One lane per rank; each pixel column is a slice of time coloured by "
                     "the activity that covered most of it (paler: less busy).  The red strip above a "
                     "lane is the share of the tasks ending in that slice that failed.</p>")
        parts.append("<h2>Tasks finished and failed over time</h2>")
        parts.append(f"<img alt='tasks over time' src='{activity_figure(a)}'>")
        parts.append("<h2>Durations</h2>")
        parts.append(f"<img alt='durations' src='{durations_figure(a)}'>")
    elif note:
        parts.append(f"<p class=note>{_e(note)}</p>")

    parts.append("<h2>Load per rank</h2>")
    if pictures:
        parts.append(f"<img alt='load per rank' src='{load_figure(load)}'>")
    rows = _rank_rows(load)
    parts.append(_table(["rank", "tasks", "busy (top-level tasks)"],
                        [[rk, f"{c:,}", fmt_duration(b)] for rk, c, b in rows], numeric=(1, 2)))
    if len(rows) < len(load["rank"]):
        parts.append(f"<p class=note>The {len(rows) // 2} busiest and idlest of {len(load['rank'])} ranks.</p>")

    parts.append(f"<h2>Failures ({nfail:,})</h2>")
    if nfail:
        groups, ngroups = failure_groups(a)
        parts.append(_table(["count", "activity", "error", "example message", "ranks", "first", "last",
                             "first task"],
                            [[f"{g['count']:,}", g["activity"], g["type"], _short(g["message"], 160),
                              _ranks_text(g["ranks"]), fmt_duration(g["first_s"]), fmt_duration(g["last_s"]),
                              g["task_id"]] for g in groups], numeric=(0,)))
        if ngroups > len(groups):
            parts.append(f"<p class=note>{ngroups - len(groups)} smaller groups not shown "
                         "(flowcept query ARCHIVE -f '{\"status\": \"ERROR\"}' lists every failure).</p>")
        first = _head(a, a.failed(), top)
        parts.append(_table(["task", "activity", "rank", "started", "error", "used"],
                            [[t["task_id"], t["activity_id"], t["rank"],
                              fmt_duration((t["start_ns"] - int(start.min())) / 1e9), _short(_error_text(t), 160),
                              _short(t.get("used", {}))] for t in first], numeric=(2,)))
    else:
        parts.append("<p>No task failed.</p>")

    parts.append(f"<h2>Slowest {min(top, a.n)} tasks</h2>")
    slow = a.slowest(top)
    parts.append(_table(["task", "activity", "rank", "duration", "status", "used"],
                        [[t["task_id"], t["activity_id"], t["rank"], fmt_duration(t["ended_at"] - t["started_at"]),
                          t["status"], _short(t.get("used", {}))] for t in slow], numeric=(2, 3)))

    chain = slowest_chain(a)
    docs = Selection(a, [r for r, _v in chain]).to_list()
    total = sum(d["end_ns"] - d["start_ns"] for d in docs) / 1e9
    parts.append(f"<h2>Slowest chain ({len(chain)} task{'s' if len(chain) != 1 else ''}, "
                 f"{fmt_duration(total)} of work)</h2>")
    parts.append("<p class=note>Tasks linked by data: each used a value the one before it generated. "
                 + ("No task used a value another generated: the slowest task stands alone." if len(chain) == 1
                    else "") + "</p>")
    t0 = int(start.min())
    parts.append(_table(["#", "task", "activity", "rank", "started", "duration", "linked by"],
                        [[k + 1, d["task_id"], d["activity_id"], d["rank"], fmt_duration((d["start_ns"] - t0) / 1e9),
                          fmt_duration((d["end_ns"] - d["start_ns"]) / 1e9), "" if v is None else _short(v, 60)]
                         for k, ((_r, v), d) in enumerate(zip(chain, docs))], numeric=(0, 3)))
    parts.append("<p class=note>Written by flowcept report; self-contained: the pictures are inline.</p>")
    parts.append("</body></html>")
    return "\n".join(parts), note


def default_output(archive_path: str) -> str:
    """``<archive without .h5>.report.html``, beside the archive."""
    p = os.path.abspath(archive_path)
    base = p[:-3] if p.endswith(".h5") else p
    return base + SUFFIX


def report(archive_path: str, output: Optional[str] = None, plots: bool = True, top: int = 5,
           write_html: bool = True):
    """Returns (text, [files written], note).  ``output``: the HTML file (a
    directory: the file goes in it); default beside the archive."""
    from flowcept.archive import open as open_archive
    from flowcept.osutil import atomic_write, private_dir
    with open_archive(archive_path) as a:
        text = summary_text(a, top=top)
        written: List[str] = []
        note = None
        if write_html:
            page, note = html_report(a, top=max(top, 10), plots=plots)
            out = output or default_output(archive_path)
            if os.path.isdir(out) or out.endswith(os.sep):
                out = os.path.join(out, os.path.basename(default_output(archive_path)))
            private_dir(os.path.dirname(os.path.abspath(out)))
            atomic_write(out, page)
            written.append(out)
        return text, written, note


