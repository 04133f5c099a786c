"""`flowcept report`: the one-file HTML job report.  At 152,000 tasks with 8,000
failures (captured for real on 4 MPI ranks) the page stays small and self-contained
and the failure marks stay readable (a per-pixel share, not one mark per failure);
the slowest chain follows data dependencies; durations carry units that fit; the
file goes beside the archive whatever the current directory."""
import base64
import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
pytestmark = pytest.mark.timeout(600)

PER_RANK = 38_000
BURSTS = ((10_000, 13_000), (25_000, 28_000))   # rank 3 fails throughout these
SCATTER = 57                                      # ranks 0-2 fail every 57th task

APP = f"""
import time
from mpi4py import MPI
from flowcept.mpi import instrument

with instrument(MPI.COMM_WORLD, workflow_name="report-scale") as prov:
    rank = MPI.COMM_WORLD.Get_rank()

    @prov.task
    def step(i):
        if (rank == 3 and any(lo <= i < hi for lo, hi in {BURSTS!r})) or (rank < 3 and i % {SCATTER} == 0):
            raise RuntimeError(f"solver diverged at row {{i}}")
        return i

    @prov.task
    def io(i):
        return i

    for i in range({PER_RANK}):
        try:
            (io if i % 50 == 0 else step)(i)
        except RuntimeError:
            pass
        if i % 2000 == 0:
            time.sleep(0.002)
"""


def _clean_env(**kw):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWCEPT_")}
    env.pop("SLURM_JOB_ID", None)
    env["DUMP_BUFFER"] = "false"     # no Flowcept-style buffer file in the working directory
    env.update(kw)
    return env


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    from flowcept.archive.compact import compact
    base = str(tmp_path_factory.mktemp("report-scale"))
    app = os.path.join(base, "app.py")
    with open(app, "w") as f:
        f.write(APP)
    runs = os.path.join(base, "runs")
    subprocess.run(["mpiexec", "-n", "4", sys.executable, app], check=True, timeout=300, cwd=base,
                   capture_output=True, env=_clean_env(FLOWCEPT_RUN_DIR=runs,
                                                       FLOWCEPT_SHM_DIR=os.path.join(base, "shm")))
    h5 = os.path.join(base, "archives", "scale.h5")
    os.makedirs(os.path.dirname(h5))
    compact(runs, h5, progress=False)
    return h5


def expected_failures():
    fails = lambda rank, i: i % 50 != 0 and (  # noqa: E731 - the app's rule
        (rank == 3 and any(lo <= i < hi for lo, hi in BURSTS)) or (rank < 3 and i % SCATTER == 0))
    return sum(fails(r, i) for r in range(4) for i in range(PER_RANK))


def _images(page):
    return re.findall(r"src='data:image/png;base64,([^']+)'", page)


def test_report_at_152k_tasks_and_8k_failures(big, tmp_path):
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    r = subprocess.run([sys.executable, "-m", "flowcept", "report", big], capture_output=True, text=True,
                       timeout=500, cwd=elsewhere, env=_clean_env())
    assert r.returncode == 0, r.stderr
    out = big[:-3] + ".report.html"
    assert f"wrote {out}" in r.stdout and not os.listdir(elsewhere)   # beside the archive, not in the cwd
    n_fail = expected_failures()
    assert 7_500 <= n_fail <= 8_500
    assert f"152000 tasks, 4 ranks, {n_fail} failed" in r.stdout
    page = open(out, encoding="utf-8").read()
    assert len(page) < 3_000_000                                   # readable, not one element per task
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # self-contained: nothing fetched
    assert "<script" not in page
    imgs = _images(page)
    assert len(imgs) == 4
    import matplotlib.image as mpimg
    for b64 in imgs:
        png = mpimg.imread(io.BytesIO(base64.b64decode(b64)), format="png")
        assert png.shape[0] > 200 and png.shape[1] > 1000
    assert f"Failures ({n_fail:,})" in page
    # one failure group per (activity, error, message shape): "row 12" and "row 13" are one
    groups = re.findall(r"<tr><td class=n>([\d,]+)</td><td>step</td><td>builtins.RuntimeError</td>", page)
    assert [int(g.replace(",", "")) for g in groups] == [n_fail]
    assert "<td>0-3</td>" in page.split("builtins.RuntimeError", 1)[1][:600]   # the ranks the group hit
    # durations in units that fit: never "p50 0.000456 ms"
    assert not re.search(r"\b0\.0\d* (ms|s|µs)\b", page)


def test_failure_strip_is_a_share_per_pixel_not_a_solid_bar(big):
    from flowcept.archive import open as open_archive
    from flowcept.archive.report import TIMELINE_PX, timeline_raster
    with open_archive(big) as a:
        r = timeline_raster(a)
        rank = a._column("rank")
        end = a._column("end_ns").astype(np.int64)
        t0, span = int(a._column("start_ns").min()), int(end.max()) - int(a._column("start_ns").min())
    fail, ended = r["fail"], r["ended"]
    assert fail.shape == (4, TIMELINE_PX) and fail.sum() == expected_failures()
    assert ended.sum() == 152_000
    share = np.divide(fail, ended, out=np.zeros_like(fail), where=ended > 0)
    # rank 3: saturated inside the bursts, blank outside them
    assert (rank == 3).sum() == PER_RANK and span > 0 and t0 > 0
    burst_cols = share[3] > 0.9
    assert 0.05 < burst_cols.mean() < 0.6 and (share[3] == 0).mean() > 0.3
    # ranks 0-2: 1 in 57 tasks fails: pale marks (a column where only 2 tasks ended may show half)
    for lane in range(3):
        s = share[lane][fail[lane] > 0]
        assert len(s) > 50 and np.median(s) < 0.3 and np.percentile(s, 90) <= 0.5
    # the strip pixels: their colour follows the share (several levels, white where none failed)
    strip = r["image"][np.arange(4) * r["rows_per_lane"]]            # first strip row of each lane
    white = (strip > 0.999).all(axis=2)
    assert (white == (fail == 0)).all()
    levels = np.unique(np.round(strip[~white][:, 1], 2))
    assert len(levels) >= 3
    red3 = strip[3][burst_cols][:, 1].mean()                         # green channel: lower is redder
    red0 = strip[0][fail[0] > 0][:, 1].mean()
    assert red3 < red0 - 0.3


def _pipeline_archive(tmp_path):
    from flowcept.archive.compact import compact
    runs = str(tmp_path / "runs")
    subprocess.run([sys.executable, os.path.join(HERE, "pipeline_app.py")], check=True, timeout=120,
                   capture_output=True, env=_clean_env(FLOWCEPT_RUN_DIR=runs,
                                                       FLOWCEPT_SHM_DIR=str(tmp_path / "shm")))
    h5 = str(tmp_path / "pipe.h5")
    compact(runs, h5, progress=False)
    return h5


def test_slowest_chain_follows_data_and_report_options(tmp_path):
    from flowcept.archive import open as open_archive
    from flowcept.archive.report import report, slowest_chain
    h5 = _pipeline_archive(tmp_path)
    with open_archive(h5) as a:
        chain = slowest_chain(a)
        docs = [a.task(int(r)) for r, _v in chain]
    acts = [d["activity_id"] for d in docs]   # train's model feeds evaluate and the closing report task
    assert acts[:3] == ["make", "clean", "train"] and acts[3] in ("evaluate", "report") and len(acts) == 4
    values = [v for _r, v in chain]
    assert values[0] is None and values[1].startswith("/data/") and values[2].endswith(".csv.clean")
    for a_doc, b_doc in zip(docs, docs[1:]):
        assert a_doc["end_ns"] <= b_doc["start_ns"]
    outdir = tmp_path / "www"
    outdir.mkdir()
    text, written, note = report(h5, str(outdir) + os.sep, top=3)
    assert written == [str(outdir / "pipe.report.html")] and note is None
    page = open(written[0], encoding="utf-8").read()
    assert "Slowest chain (4 tasks" in page and "cannot evaluate model-b.csv.clean" in page
    text, written, _ = report(h5, str(tmp_path / "x.html"), plots=False)
    page = open(written[0], encoding="utf-8").read()
    assert not _images(page) and "<table>" in page
    text, written, _ = report(h5, write_html=False)
    assert written == [] and "failed tasks (1)" in text


@pytest.mark.parametrize("s,want", [(0.000456, "456 µs"), (75, "1.25 min"), (1.5e-8, "15 ns"), (0.99996, "1 s"),
                                    (7200, "2 h"), (0.0123, "12.3 ms"), (59.9, "59.9 s"), (0, "0 s")])
def test_durations_in_a_unit_that_fits(s, want):
    from flowcept.archive.report import fmt_duration
    assert fmt_duration(s) == want
