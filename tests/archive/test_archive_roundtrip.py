"""Archive end to end on a real MPI run: LMDB -> HDF5 -> reader, field by field."""
import importlib
import json
import os
import signal
import subprocess
import sys
import time

import h5py
import msgpack
import numpy as np
import pytest

import flowcept.archive as fa
from flowcept.archive import ArchiveError
from flowcept.record.layout import RECORD_DTYPE
from flowcept.record.payload import decode
from flowcept.query.tasks import read_records, read_tasks, read_workflows

from archive_helpers import ROOT, run_heat2d, synth, write_store

pytestmark = pytest.mark.mpi
writer_mod = importlib.import_module("flowcept.archive.writer")


@pytest.fixture(scope="module")
def heat(tmp_path_factory):
    base = tmp_path_factory.mktemp("heat")
    run_dir = run_heat2d(str(base))
    out = str(base / "job.h5")
    rep = fa.compact(run_dir, out)
    return run_dir, out, rep


def _sorted(recs):
    return np.lexsort((recs["task_id"], recs["workflow_id"], recs["start_ns"]))


def test_round_trip_field_by_field(heat):
    run_dir, out, rep = heat
    orig = read_records(run_dir)
    assert len(orig) == rep.records == 4 * (1 + 20 * 3 + 2 + 1)  # init, 20x(timestep+2 kids), 2 residuals, summarize
    with fa.open(out) as a:
        assert len(a) == len(orig)
        t = a.tasks
        assert np.all(np.diff(t["start_ns"]) >= 0), "sorted by start_ns"
        o, p = _sorted(orig.records), _sorted(t)
        for name in RECORD_DTYPE.names:
            if name in ("activity_id", "payload_off"):
                continue
            assert np.array_equal(orig.records[name][o], t[name][p]), name
        assert list(orig.activity[o]) == list(t["activity"][p])
        assert list(orig.node[o]) == list(t["node"][p])
        for i, j in zip(o.tolist(), p.tolist()):
            assert a.payload_bytes(j) == orig.payloads[i]
            body = decode(orig.payloads[i])
            assert a.used(j) == body.get("used", {}) and a.generated(j) == body.get("generated", {})
        # task dicts equal the reader's
        mine = {d["task_id"]: d for d in (a.task(i) for i in range(len(a)))}
        theirs = {d["task_id"]: d for d in read_tasks(run_dir)}
        assert mine == theirs
        assert a.workflows == read_workflows(run_dir)
        (job,) = os.listdir(run_dir)
        assert a.jobs == [job] and a.attrs["job"] == job
        assert a.attrs["record_count"] == len(orig) and a.attrs["format_version"] == fa.ARCHIVE_VERSION
        assert json.loads(a.attrs["sources"]) and a.attrs["flowcept_version"]


def test_layout_is_derived_from_record_dtype(heat):
    _run, out, _rep = heat
    with h5py.File(out) as f:
        names = set(f["tasks"])
        expected = {n for n, _f, _dt in fa.columns()}
        assert names == expected
        assert {("activity" if n == "activity_id" else n) for n in RECORD_DTYPE.names} | {"node", "job"} == names
        for n, _f, dt in fa.columns():
            ds = f[f"tasks/{n}"]
            assert ds.dtype == np.dtype(dt) and ds.chunks and ds.compression == "gzip" and ds.shuffle
        assert f["payloads"].compression == "gzip"


@pytest.mark.parametrize("compression", ["lzf", "none"])
def test_other_compressions_read_back_equal(heat, tmp_path, compression):
    run_dir, out, _ = heat
    other = str(tmp_path / f"{compression}.h5")
    fa.compact(run_dir, other, compression=compression)
    with fa.open(out) as a, fa.open(other) as b:
        assert np.array_equal(a.tasks, b.tasks)
        assert [a.payload(i) for i in range(len(a))] == [b.payload(i) for i in range(len(b))]


def test_compacting_again_and_append_add_no_duplicates(heat, tmp_path):
    run_dir, out, _ = heat
    copy = str(tmp_path / "j.h5")
    r1 = fa.compact(run_dir, copy)
    r2 = fa.compact(run_dir, copy)            # same output again: merge
    r3 = fa.compact(run_dir, copy, append=True)
    assert r1.records == r2.records == r3.records and r2.new_records == 0
    assert r2.skipped_batches == r2.batches > 0
    with fa.open(copy) as a, fa.open(out) as b:
        assert np.array_equal(a.tasks, b.tasks)
        key = np.stack([a.tasks["workflow_id"], a.tasks["task_id"]], 1)
        assert len(np.unique(key, axis=0)) == len(a)
    with pytest.raises(FileExistsError):
        fa.compact(run_dir, copy, append=False)
    assert fa.compact(run_dir, copy, overwrite=True).new_records == r1.records


def test_record_level_dedupe_across_batches(tmp_path):
    """The same tasks under other batch keys (e.g. stored twice by two paths)
    are dropped by (workflow_id, task_id); new tasks are added; payloads stay right."""
    recs, pays, strings = synth(300)
    write_store(str(tmp_path / "a" / "store" / "n1"), recs, pays, strings, ring_uid=1,
                workflow=(0xABC, {"name": "w", "user": "u"}))
    out = str(tmp_path / "x.h5")
    assert fa.compact(str(tmp_path / "a"), out).records == 300
    recs2, pays2, _ = synth(200, start_id=201)     # 100 overlap (ids 201..300), 100 new
    write_store(str(tmp_path / "b" / "store" / "n1"), recs2, pays2, strings, ring_uid=2)
    rep = fa.compact(str(tmp_path / "b"), out)
    assert rep.records == 400 and rep.duplicates == 100 and rep.new_records == 100
    with fa.open(out) as a:
        assert sorted(a.tasks["task_id"].tolist()) == list(range(1, 401))
        for i in range(len(a)):
            tid = int(a.tasks["task_id"][i])
            assert a.used(i) == {"i": tid} and a.generated(i) == {"o": 2 * tid}
        assert a.workflows["0000000000000abc"]["name"] == "w"
        assert set(a.jobs) == {"a", "b"}
    # within one compaction too
    out2 = str(tmp_path / "y.h5")
    rep = fa.compact(str(tmp_path), out2)
    assert rep.records == 400 and rep.duplicates == 100


def test_interrupted_compaction_leaves_no_file(heat, tmp_path, monkeypatch):
    run_dir, out, _ = heat
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    target = str(tmp_path / "int.h5")

    def boom(*a, **k):
        raise KeyboardInterrupt("interrupted mid-write")

    real_column = writer_mod.Writer.column
    calls = []

    def column_then_boom(self, *a, **k):
        calls.append(a[0])
        if len(calls) == 5:
            boom()
        return real_column(self, *a, **k)

    monkeypatch.setattr(writer_mod.Writer, "column", column_then_boom)
    with pytest.raises(KeyboardInterrupt):
        fa.compact(run_dir, target)
    assert os.listdir(tmp_path) == []
    # an existing archive is left intact when merging into it is interrupted
    monkeypatch.setattr(writer_mod.Writer, "column", real_column)
    fa.compact(run_dir, target)
    before = open(target, "rb").read()
    calls.clear()
    monkeypatch.setattr(writer_mod.Writer, "column", column_then_boom)
    with pytest.raises(KeyboardInterrupt):
        fa.compact(run_dir, target, overwrite=True)
    assert open(target, "rb").read() == before and os.listdir(tmp_path) == ["int.h5"]


def test_killed_compaction_leaves_no_file_under_final_name(tmp_path):
    bench = os.path.join(ROOT, "benchmarks", "bench_archive.py")
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    store = tmp_path.parent / "big"
    code = (f"import sys; sys.path.insert(0, {os.path.dirname(bench)!r}); import bench_archive as b; "
            f"b.build_store({str(store / 'store' / 'n')!r}, 600_000)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    out = tmp_path / "killed.h5"
    p = subprocess.Popen([sys.executable, "-m", "flowcept", "compact", str(store), "-o", str(out),
                          "--compression", "lzf", "--threads", "1"])
    deadline = time.time() + 60
    while time.time() < deadline and not any(n.startswith(".killed.h5.tmp-") for n in os.listdir(tmp_path)):
        time.sleep(0.005)
    time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not out.exists()
    # the next compaction cleans the dead one's temporary file and succeeds
    rep = fa.compact(str(store), str(out))
    assert rep.records == 600_000 and out.exists()
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []


def test_errors_are_clear(heat, tmp_path):
    _run, out, _ = heat
    bad = tmp_path / "text.h5"
    bad.write_text("hello, not hdf5\n")
    with pytest.raises(ArchiveError, match=r"text\.h5.*not a readable HDF5 file"):
        fa.open(str(bad))
    data = open(out, "rb").read()
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(data[:len(data) // 2])
    with pytest.raises(ArchiveError, match=r"trunc\.h5"):
        a = fa.open(str(trunc))
        a.tasks
        [a.payload(i) for i in range(len(a))]
    # corrupt chunks: flip bytes in the middle of the file
    corrupt = tmp_path / "corrupt.h5"
    b = bytearray(data)
    mid = len(b) // 3
    b[mid:mid + 4096] = bytes(4096)
    b[2 * mid:2 * mid + 4096] = b"\xff" * 4096
    corrupt.write_bytes(bytes(b))
    with pytest.raises(ArchiveError, match=r"corrupt\.h5"):
        a = fa.open(str(corrupt))
        a.tasks
        [a.payload(i) for i in range(len(a))]
        a.workflows
    # a damaged column chunk: found when the column is read
    with h5py.File(out) as f:
        info = f["tasks/start_ns"].id.get_chunk_info(0)
    chunk = tmp_path / "chunk.h5"
    b = bytearray(data)
    b[info.byte_offset + 10:info.byte_offset + 60] = b"\x13" * 50
    chunk.write_bytes(bytes(b))
    a = fa.open(str(chunk))
    with pytest.raises(ArchiveError, match=r"chunk\.h5: cannot read dataset 'tasks/start_ns'"):
        a.tasks
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = 1
    with pytest.raises(ArchiveError, match="not a flowcept archive"):
        fa.open(str(plain))
    for ver, pattern in ((0, r"version 0 is not valid"), ("abc", r"'abc' is not a version number"),
                         (fa.ARCHIVE_VERSION + 98, rf"version {fa.ARCHIVE_VERSION + 98} is newer.*upgrade flowcept")):
        p = tmp_path / f"v{ver}.h5"
        p.write_bytes(data)
        with h5py.File(p, "r+") as f:
            f.attrs["format_version"] = ver
        with pytest.raises(ArchiveError, match=pattern):
            fa.open(str(p))
    with pytest.raises(FileNotFoundError):
        fa.open(str(tmp_path / "missing.h5"))


def test_plain_h5py_numpy_msgpack_reading_matches_api(heat):
    """Reads the archive the way docs/archive-format.md says, without flowcept.archive."""
    _run, out, _ = heat
    code = r'''
import json, sys, h5py, numpy as np, msgpack
f = h5py.File(sys.argv[1], "r")
assert f.attrs["format"] == "flowcept-archive" and int(f.attrs["format_version"]) == 1
strings = f["strings"].asstr()[()]
t = {name: f["tasks"][name][()] for name in f["tasks"]}
blob = f["payloads"][()]
rows = []
for i in range(len(t["task_id"])):
    off, n = int(t["payload_off"][i]), int(t["payload_len"][i])
    body = msgpack.unpackb(blob[off:off + n].tobytes(), raw=False, strict_map_key=False) if n else {}
    wf, tid, pid = int(t["workflow_id"][i]), int(t["task_id"][i]), int(t["parent_id"][i])
    rows.append({"task_id": f"{wf:016x}-{tid:016x}", "parent_task_id": f"{wf:016x}-{pid:016x}" if pid else None,
                 "activity_id": strings[t["activity"][i]], "hostname": strings[t["node"][i]],
                 "job": strings[t["job"][i]], "start_ns": int(t["start_ns"][i]), "end_ns": int(t["end_ns"][i]),
                 "rank": int(t["rank"][i]), "status": int(t["status"][i]),
                 "used": body.get("used"), "generated": body.get("generated")})
w = f["workflows"]
docs = {f"{int(i):016x}": msgpack.unpackb(w["docs"][int(o):int(o) + int(n)].tobytes(), raw=False)
        for i, o, n in zip(w["id"][()], w["doc_off"][()], w["doc_len"][()])}
# time range with the block index
idx = f["index"]; B = int(idx.attrs["block_rows"])
lo_t = int(t["start_ns"][len(rows) // 2])
first_block = int(np.searchsorted(idx["start_max"][()], lo_t, "left"))
start = f["tasks"]["start_ns"][first_block * B:]
later = first_block * B + int(np.searchsorted(start, lo_t, "left"))
print(json.dumps({"rows": rows, "workflows": docs, "later": later, "lo_t": lo_t}))
'''
    res = subprocess.run([sys.executable, "-c", code, out], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": ""}, cwd="/")
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    with fa.open(out) as a:
        assert len(got["rows"]) == len(a)
        for i, row in enumerate(got["rows"]):
            d = a.task(i)
            for k in ("task_id", "parent_task_id", "activity_id", "hostname", "start_ns", "end_ns", "rank"):
                assert row[k] == d[k], k
            assert row["used"] == d.get("used") and row["generated"] == d.get("generated")
            assert row["job"] == a.jobs[0]
        assert got["workflows"] == a.workflows
        lo = int(np.searchsorted(a.tasks["start_ns"], got["lo_t"], "left"))
        assert got["later"] == lo


def test_compact_with_recover_first(heat, tmp_path):
    # compaction only reads stores: the caller recovers first (the CLI does with --recover)
    from flowcept.node.recovery import recover_job
    run_dir, out, _ = heat
    (job,) = os.listdir(run_dir)
    rr = recover_job(job, run_dir=run_dir)
    rep = fa.compact(os.path.join(run_dir, job), str(tmp_path / "r.h5"))
    assert "nothing to recover" in rr.describe() and rep.records == len(read_records(run_dir))
    res = subprocess.run([sys.executable, "-m", "flowcept", "compact", os.path.join(run_dir, job),
                          "-o", str(tmp_path / "cli.h5"), "--recover", job, "--no-progress"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "nothing to recover" in res.stdout and f"{rep.records} task records" in res.stdout


def test_archive_is_owner_only(tmp_path):
    import stat
    from flowcept.native.batch import build_frame
    from flowcept.record.layout import RECORD_DTYPE
    from flowcept.store import open_store
    import numpy as np
    recs = np.zeros(2, RECORD_DTYPE)
    recs["task_id"] = [1, 2]
    with open_store("lmdb", str(tmp_path / "job" / "store" / "n1")) as st:
        st.put_batches([(b"k" * 24, build_frame(recs, [b"", b""], ["host:n1"], job_id=1, ring_uid=1,
                                               seq=0))])
    out = tmp_path / "job.h5"
    import flowcept.archive as fa
    fa.compact(str(tmp_path / "job"), str(out), progress=False)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
