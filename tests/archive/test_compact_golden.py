"""Compaction output pinned: fixed stores compacted on every path (one pass in memory, chains of
batches merged from the stores, sorted runs in a temporary file, merging into an archive, each
compression) give exactly the archive recorded in ``compact_golden.json``: every dataset
(values, dtype, shape, chunking, filters), every attribute but the ones that name the run
(time, host, source paths, flowcept version), and every stored chunk byte for byte as the
filters see it: a gzip chunk inflated (the shuffled bytes and the padding of an edge chunk,
exactly), an uncompressed chunk as it is.  Deflated bytes themselves are not compared: ISA-L's
deflate, used when installed, may encode the same input into other valid bytes from one call
to the next (it reads memory of its level buffer it did not initialise, intel/isa-l#140), so
not even two runs of the same code give the same deflated bytes every time.  lzf chunks are
compared by value (no lzf decoder without h5py's filter).  With no compression, the whole
file is the same from run to run (``test_output_is_deterministic``).

The golden file was written by the compaction as it was before its code was split by concern
and moved to C; it changes only with a deliberate change of the archive's bytes:

    python tests/archive/test_compact_golden.py --write
"""
import hashlib
import json
import os
import struct
import sys
import zlib

import msgpack
import numpy as np
import pytest

import flowcept.archive as fa

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from archive_helpers import write_store  # noqa: E402

GOLDEN = os.path.join(HERE, "compact_golden.json")
# attributes that name the run, not the data: compared for presence only
RUN_ATTRS = {"created", "created_ns", "host", "sources", "producer", "flowcept_version"}
T0 = 1_800_000_000_000_000_000


def _records(rng, n, rank, first_id, wf, acts, t0, step):
    from flowcept.record.layout import RECORD_DTYPE, STATUS_ERROR
    recs = np.zeros(n, RECORD_DTYPE)
    i = np.arange(n)
    recs["task_id"] = ((rank + 1) << 40) + first_id + i
    recs["parent_id"] = np.where(i % 4 == 0, 0, ((rank + 1) << 40) + first_id + i // 4 * 4)
    recs["workflow_id"] = wf
    # nearly sorted, many ties within and across rings, a few steps back in time
    recs["start_ns"] = t0 + (i // 3) * step + rng.integers(0, 2, n) * step
    recs["end_ns"] = recs["start_ns"] + rng.integers(0, 50_000, n)
    recs["rank"] = rank
    recs["thread_id"] = i % 3
    recs["activity_id"] = 1 + i % acts
    recs["status"] = np.where(rng.random(n) < 0.05, STATUS_ERROR, 0)
    recs["flags"] = 1
    pays = []
    for k in range(n):
        if k % 11 == 5:
            pays.append(b"")                    # no payload
        else:
            pays.append(msgpack.packb({"used": {"i": int(first_id + k), "x": [0.5] * (k % 5)},
                                       "generated": {"y": int(k) * 3}}))
    return recs, pays


def _overflow(recs, pays, rows, name):
    """Records whose activity name did not fit in the ring's table (carried in the payload)."""
    from flowcept.record.payload import ACTIVITY_OVERFLOW, FLAG_NAME_IN_PAYLOAD
    for r in rows:
        recs["activity_id"][r] = ACTIVITY_OVERFLOW
        recs["flags"][r] |= FLAG_NAME_IN_PAYLOAD
        pays[r] = struct.pack("<H", len(name)) + name + pays[r]


def build_job(base):
    """Two nodes of two rings each (ranks 0-3, different string tables), a workflow record,
    RUNNING records of tasks that finished later, an overflow name, and one node's store
    also copied into a third store directory (the same batches twice)."""
    from flowcept.record.layout import STATUS_RUNNING
    rng = np.random.default_rng(20261207)
    wf = 0x5EED5EED12345678
    for node in range(2):
        for ring in range(2):
            rank = node * 2 + ring
            acts = 3 + rank % 2
            recs, pays = _records(rng, 1500 + 137 * rank, rank, 1, wf, acts, T0 + rank * 700, 1000)
            if rank == 1:
                _overflow(recs, pays, [7, 300, 301], b"a-name-too-many")
            if rank == 2:   # a second pass back in time: its batches start new chains
                recs["start_ns"][900:] -= 600_000
            strings = [f"host:node{node}"] + [f"act{(a + rank) % 5}" for a in range(acts)]
            path = os.path.join(base, "store", f"node{node}")
            write_store(path, recs, pays, strings, ring_uid=10 + rank, per_batch=97 + 13 * rank,
                        workflow=(wf, {"name": "golden", "job": "g1"}) if rank == 0 else None)
            if rank == 3:   # RUNNING records, stored later under other keys
                run = recs[::5].copy()
                run["status"] = STATUS_RUNNING
                run["end_ns"] = 0
                write_store(os.path.join(base, "store", "node1-late"), run, pays[::5], strings,
                            ring_uid=99, per_batch=64)
    # the same batches in two store directories (a store copied before the epilog ran)
    import shutil
    shutil.copytree(os.path.join(base, "store", "node0"), os.path.join(base, "store", "node0-copy"))


def build_second(base):
    """Tasks that overlap build_job's node0 (same ids and start times) plus new ones."""
    rng = np.random.default_rng(20261207)
    wf = 0x5EED5EED12345678
    recs, pays = _records(rng, 1500, 0, 1, wf, 3, T0, 1000)   # rank 0's tasks again
    more, mpays = _records(rng, 800, 5, 1, wf, 3, T0 + 250_000, 700)
    strings = ["host:node9", "act0", "act1", "act2"]
    write_store(os.path.join(base, "store", "node9"), recs[700:], pays[700:], strings,
                ring_uid=50, per_batch=120)
    write_store(os.path.join(base, "store", "node9b"), more, mpays, strings, ring_uid=51,
                per_batch=90)


def force(monkeypatch, path):
    """Compactions after this take ``path``: "chains" (the batches merged straight from the
    stores) or "runs" (sorted runs in a temporary file); without it, jobs this small fit in
    one sorted run in memory."""
    import importlib
    plan = importlib.import_module("flowcept.archive.compact")
    if path == "chains":
        monkeypatch.setattr(plan, "_SCAN_BYTES_PER_ROW", 1 << 30)
    elif path == "runs":
        monkeypatch.setattr(plan, "_SCAN_SHARE", 0.00005)
        monkeypatch.setattr(plan, "_MERGE_SHARE", 0.000005)
        monkeypatch.setattr(plan, "_MIN_BLOCK", 5)


# name -> (compactions: [(job dir, kwargs)], path)
CASES = {
    "one_pass_gzip": ([("a", {})], None),
    "one_pass_gzip_small_chunks": ([("a", {"chunk_rows": 500})], None),
    "one_pass_lzf": ([("a", {"compression": "lzf"})], None),
    "one_pass_none": ([("a", {"compression": "none"})], None),
    "one_pass_gzip_level6": ([("a", {"level": 6, "chunk_rows": 1000})], None),
    "chains": ([("a", {"chunk_rows": 256})], "chains"),
    "runs": ([("a", {"chunk_rows": 256})], "runs"),
    "append": ([("a", {"chunk_rows": 300}), ("b", {"chunk_rows": 300})], None),
    "append_chains": ([("a", {"chunk_rows": 300}), ("b", {"chunk_rows": 300})], "chains"),
    "append_runs": ([("a", {"chunk_rows": 300}), ("b", {"chunk_rows": 300})], "runs"),
}


def _attr(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def describe(path):
    """Every dataset and attribute of an HDF5 file, with digests of values and stored chunks."""
    import h5py
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            attrs = {k: (None if k in RUN_ATTRS else _attr(obj.attrs[k])) for k in sorted(obj.attrs)}
            if isinstance(obj, h5py.Group):
                out[name] = {"group": True, "attrs": attrs}
                return
            d = {"dtype": obj.dtype.str if obj.dtype.kind != "O" else "vlen-str",
                 "shape": list(obj.shape), "maxshape": list(obj.maxshape),
                 "chunks": list(obj.chunks) if obj.chunks else None,
                 "compression": obj.compression, "compression_opts": _attr(obj.compression_opts),
                 "shuffle": obj.shuffle, "attrs": attrs}
            if obj.dtype.kind == "O":
                vals = json.dumps(list(obj.asstr()[()])).encode()
            else:
                vals = np.ascontiguousarray(obj[()]).tobytes()
            d["values_sha256"] = hashlib.sha256(vals).hexdigest()
            if obj.chunks:
                h = hashlib.sha256()
                n_chunks = obj.id.get_num_chunks()
                for i in range(n_chunks):
                    info = obj.id.get_chunk_info(i)
                    mask, raw = obj.id.read_direct_chunk(info.chunk_offset)
                    h.update(repr((info.chunk_offset, mask)).encode())
                    if obj.compression == "gzip":
                        h.update(zlib.decompress(raw))
                    elif obj.compression is None:
                        h.update(raw)
                d["chunks_sha256"] = h.hexdigest()
                d["stored_chunks"] = n_chunks
            out[name] = d
        out["/"] = {"attrs": {k: (None if k in RUN_ATTRS else _attr(f.attrs[k]))
                              for k in sorted(f.attrs)}}
        f.visititems(visit)
    return out


def run_case(tmp, name, monkeypatch):
    steps, path = CASES[name]
    out = os.path.join(tmp, f"{name}.h5")
    with monkeypatch.context() as m:
        if path:
            force(m, path)
        for i, (job, kw) in enumerate(steps):
            rep = fa.compact(os.path.join(tmp, job), out, progress=False, overwrite=i == 0, **kw)
    if path == "chains":
        assert rep.chains > 1 and rep.runs == 0
    elif path == "runs":
        assert rep.runs > 1
    elif len(steps) == 1:
        assert rep.runs == 0 and rep.chains == 0
    return describe(out), rep


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("golden"))
    build_job(os.path.join(tmp, "a"))
    build_second(os.path.join(tmp, "b"))
    return tmp


def _load():
    with open(GOLDEN) as f:
        return json.load(f)


@pytest.mark.parametrize("name", sorted(CASES))
def test_output_equals_golden(jobs, name, monkeypatch):
    golden = _load()
    got, rep = run_case(jobs, name, monkeypatch)
    want = golden["cases"][name]
    assert [rep.records, rep.duplicates] == want["report"]
    assert sorted(got) == sorted(want["file"])
    for ds in want["file"]:
        assert got[ds] == want["file"][ds], (name, ds)


def test_golden_covers_what_it_says(jobs, monkeypatch):
    """The fixed job does have duplicates, overflow names, several stores and rings."""
    got, rep = run_case(jobs, "one_pass_gzip", monkeypatch)
    assert rep.duplicates > 300 and len(rep.stores) == 4
    with fa.open(os.path.join(jobs, "one_pass_gzip.h5")) as a:
        assert len(np.unique(a.tasks["rank"])) == 4
        assert (a.tasks["payload_len"] == 0).any()


@pytest.mark.parametrize("name", ["one_pass_gzip", "chains", "runs", "append", "append_chains",
                                  "append_runs"])
def test_output_is_deterministic(jobs, name, monkeypatch, tmp_path):
    """The same stores give the same file, byte for byte, once the attributes that name the
    moment and the host are pinned, on every path: nothing in the layout depends on thread
    timing (uncompressed, so that the deflater's own variation stays out)."""
    import flowcept.archive.format as fmt
    monkeypatch.setattr(fmt, "stamp", lambda: ("2026-01-01T00:00:00+00:00", 1, "host"))
    steps, path = CASES[name]
    digests = []
    for rep in range(2):
        out = str(tmp_path / f"{name}-{rep}.h5")
        with monkeypatch.context() as m:
            if path:
                force(m, path)
            for i, (job, kw) in enumerate(steps):
                kw = dict(kw, compression="none")
                fa.compact(os.path.join(jobs, job), out, progress=False, overwrite=i == 0, **kw)
        with open(out, "rb") as f:
            digests.append(hashlib.sha256(f.read()).hexdigest())
    assert digests[0] == digests[1]


def write_golden(tmp):
    from _pytest.monkeypatch import MonkeyPatch
    build_job(os.path.join(tmp, "a"))
    build_second(os.path.join(tmp, "b"))
    cases = {}
    for name in sorted(CASES):
        mp = MonkeyPatch()
        try:
            got, rep = run_case(tmp, name, mp)
        finally:
            mp.undo()
        cases[name] = {"report": [rep.records, rep.duplicates], "file": got}
    with open(GOLDEN, "w") as f:
        json.dump({"cases": cases}, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    if "--write" not in sys.argv:
        sys.exit(__doc__)
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        write_golden(d)
    print("wrote", GOLDEN)
