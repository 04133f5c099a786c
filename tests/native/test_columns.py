"""The compaction's column functions in C (flowcept.native.columns) give exactly what their
numpy references give: decoding real batch frames into the archive's columns, the k-way merge,
the duplicate rule, gather + shuffle (and what HDF5's own filters read back of it); the same
from several threads at once; bad input is refused with an error, never a crash."""
import threading
import zlib

import numpy as np
import pytest

from flowcept.native import columns as nc
from flowcept.native.batch import build_frame
from flowcept.record.layout import FLAG_WORKFLOW, RECORD_DTYPE, STATUS_RUNNING
from flowcept.record.payload import ACTIVITY_OVERFLOW


def _frame(rng, n, workflows=0):
    recs = np.zeros(n, RECORD_DTYPE)
    for name in RECORD_DTYPE.names:
        info = np.iinfo(RECORD_DTYPE.fields[name][0])
        recs[name] = rng.integers(info.min, info.max, n, dtype=RECORD_DTYPE.fields[name][0], endpoint=True)
    recs["activity_id"] = rng.integers(0, 6, n)
    recs["activity_id"][rng.random(n) < 0.1] = ACTIVITY_OVERFLOW
    recs["flags"] &= ~np.uint16(FLAG_WORKFLOW)
    if workflows:
        recs["flags"][rng.choice(n, workflows, replace=False)] |= FLAG_WORKFLOW
    pays = [bytes(rng.integers(0, 256, int(k), dtype=np.uint8)) for k in rng.integers(0, 40, n)]
    return build_frame(recs, pays, ["host:x", "a", "b", "c"], job_id=1, ring_uid=2, seq=3)


def _specs(cap):
    """The archive's columns (flowcept.archive.format) and a seq column."""
    from flowcept.archive import columns
    specs = []
    for name, fld, dt in columns():
        dst = np.zeros(cap, dt)
        if fld == "activity_id":
            specs.append((nc.LUT, fld, dst))
        elif fld == "payload_off":
            specs.append((nc.ADD, fld, dst))
        elif fld is None:
            specs.append((nc.CONST, None, dst))
        else:
            specs.append((nc.COPY, fld, dst))
    specs.append((nc.SEQ, None, np.zeros(cap, np.int64)))
    return specs


@pytest.mark.parametrize("workflows", [0, 3])
def test_decode_equals_numpy(workflows):
    rng = np.random.default_rng(workflows)
    cap = 3000
    c_specs, np_specs = _specs(cap), _specs(cap)
    dec = nc.Decoder(c_specs)
    at = 0
    for k, n in enumerate([1, 100, 999, 0, 1200]):
        frame = _frame(rng, n, min(workflows, n))
        lut = rng.integers(0, 1 << 31, 1 + k % 4).astype(np.uint32)
        kw = dict(lut=lut, add=(1 << 35) + k, consts=(7 + k, 9), seq=1000 * k)
        got = dec.fill(frame, at, **kw)
        want = nc.decode_numpy(frame, np_specs, at, **kw)
        assert got == want == n - min(workflows, n)
        at += got
    for (_k, fld, a), (_k2, _f, b) in zip(c_specs, np_specs):
        assert np.array_equal(a, b), fld
    assert not c_specs[0][2][at:].any()           # nothing past the rows


def test_decode_refuses_what_does_not_fit():
    rng = np.random.default_rng(5)
    frame = _frame(rng, 50)
    dec = nc.Decoder(_specs(60))
    lut = np.arange(3, dtype=np.uint32)
    with pytest.raises(nc.ColumnError, match="ENOSPC"):
        dec.fill(frame, 20, lut=lut)
    with pytest.raises(nc.ColumnError, match="EBADMSG"):
        dec.fill(frame[:200], 0, lut=lut)
    with pytest.raises(ValueError, match="contiguous"):
        nc.Decoder([(nc.COPY, "task_id", np.zeros(10, np.uint64)[::2])])


def _sorted_parts(rng, k, spread, maxlen=300):
    keys = [np.sort(rng.integers(0, spread, rng.integers(0, maxlen))).astype(np.int64) for _ in range(k)]
    # seqs increasing within each part (the scan positions are), unique overall
    base = 0
    seqs = []
    for a in keys:
        seqs.append(np.arange(base, base + len(a), dtype=np.int64)[rng.permutation(len(a))].copy())
        seqs[-1].sort()
        base += len(a)
    perm = rng.permutation(len(keys))       # parts not in seq order
    return [keys[i] for i in perm], [seqs[i] for i in perm]


@pytest.mark.parametrize("seed", range(8))
def test_merge_equals_numpy(seed):
    rng = np.random.default_rng(seed)
    k = [1, 2, 5, 17, 40, 3, 600, 16][seed]
    keys, seqs = _sorted_parts(rng, k, [5, 50, 10_000, 3, 100, 1 << 40, 20, 2][seed])
    for s in (None, seqs):
        o, m = nc.merge_order(keys, s)
        ro, rm = nc.merge_order_numpy(keys, s)
        assert np.array_equal(o, ro) and np.array_equal(m, rm)
        assert np.all(np.diff(m) >= 0)


def test_merge_refuses_bad_parts():
    with pytest.raises(ValueError, match="one seq per key"):
        nc.merge_order([np.arange(3)], [np.arange(2)])
    o, m = nc.merge_order([])
    assert len(o) == len(m) == 0


@pytest.mark.parametrize("seed", range(10))
def test_duplicates_equal_numpy(seed):
    rng = np.random.default_rng(100 + seed)
    k = int(rng.integers(1, 5))
    n = int(rng.integers(1, 3000))
    wf = [rng.integers(0, 2, n).astype(np.uint64) for _ in range(k)]
    tid = [rng.integers(0, [3, 50, 1000][seed % 3], n).astype(np.uint64) for _ in range(k)]
    status = [rng.integers(0, 3, n).astype(np.uint16) for _ in range(k)]
    order = ((rng.integers(0, k, n).astype(np.uint64) << np.uint64(nc.ROW_BITS))
             | rng.integers(0, n, n).astype(np.uint64))
    keys = np.cumsum(rng.random(n) < [0.02, 0.3, 0.9][seed % 3]).astype(np.int64)
    want = nc.drop_duplicates_numpy(order, keys, wf, tid, status, STATUS_RUNNING)
    o2, k2 = order.copy(), keys.copy()
    left = nc.drop_duplicates(o2, k2, wf, tid, status, STATUS_RUNNING)
    assert left == len(want) < n or seed % 3 == 2
    assert np.array_equal(o2[:left], order[want]) and np.array_equal(k2[:left], keys[want])


def test_duplicates_refuse_bad_orders():
    one, st = [np.zeros(3, np.uint64)], [np.zeros(3, np.uint16)]
    with pytest.raises(nc.ColumnError, match="EINVAL"):      # keys not sorted
        nc.drop_duplicates(np.zeros(3, np.uint64), np.array([2, 1, 3], np.int64), one, one, st,
                           STATUS_RUNNING)
    with pytest.raises(nc.ColumnError, match="EINVAL"):      # a row past its part
        nc.drop_duplicates(np.array([0, 1, 3], np.uint64), np.zeros(3, np.int64), one, one, st,
                           STATUS_RUNNING)


def test_gather_refuses_rows_outside_the_parts():
    a = np.arange(10, dtype=np.int64)
    with pytest.raises(nc.ColumnError, match="EINVAL"):
        nc.gather([([a], np.array([10], np.uint64), 0, 1)], 8, 4, True)
    with pytest.raises(nc.ColumnError, match="EINVAL"):
        nc.gather([([a], None, 5, 6)], 8, 8, True)
    with pytest.raises(nc.ColumnError, match="EINVAL"):      # more rows than the chunk
        nc.gather([([a], None, 0, 10)], 8, 9, True)


def _pieces(rng, itemsize, k=3, n=800):
    dt = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.int64}[itemsize]
    info = np.iinfo(dt)
    bases = [rng.integers(info.min, info.max, n, dtype=dt, endpoint=True) for _ in range(k)]
    pieces = []
    for _ in range(int(rng.integers(1, 4))):
        if rng.random() < 0.5:
            first = int(rng.integers(0, n))
            pieces.append(([bases[int(rng.integers(0, k))]], None, first, int(rng.integers(0, n - first))))
        else:
            m = int(rng.integers(0, 300))
            order = ((rng.integers(0, k, m).astype(np.uint64) << np.uint64(nc.ROW_BITS))
                     | rng.integers(0, n, m).astype(np.uint64))
            pieces.append((bases, order, 0, m))
    return pieces


@pytest.mark.parametrize("itemsize", [1, 2, 4, 8])
@pytest.mark.parametrize("shuffle", [False, True])
def test_gather_equals_numpy(itemsize, shuffle):
    rng = np.random.default_rng(itemsize * 2 + shuffle)
    for _ in range(20):
        pieces = _pieces(rng, itemsize)
        total = sum(p[3] for p in pieces)
        for chunk in (total, total + int(rng.integers(1, 100))):
            got, mx = nc.gather(pieces, itemsize, chunk, shuffle, want_max=True)
            want, wmx = nc.gather_numpy(pieces, itemsize, chunk, shuffle, want_max=True)
            assert np.array_equal(got, want)
            assert mx == wmx


def test_shuffled_chunks_read_back_through_hdf5(tmp_path):
    """The gathered, shuffled, deflated bytes written raw are what HDF5's own shuffle and
    deflate filters read back."""
    import h5py
    rng = np.random.default_rng(9)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        for itemsize in (2, 4, 8):
            pieces = _pieces(rng, itemsize)
            total = sum(p[3] for p in pieces)
            chunk = total + 17
            dt = {2: "<u2", 4: "<u4", 8: "<i8"}[itemsize]
            ds = f.create_dataset(f"c{itemsize}", shape=(total,), maxshape=(None,), dtype=dt, chunks=(chunk,),
                                  compression="gzip", shuffle=True)
            raw, _ = nc.gather(pieces, itemsize, chunk, True)
            ds.id.write_direct_chunk((0,), zlib.compress(raw.tobytes(), 1))
            plain, _ = nc.gather(pieces, itemsize, total, False)
            assert np.array_equal(ds[()], plain.view(dt))


def test_columns_from_threads():
    """The pool calls gather on shared parts from several threads (cffi lets the GIL go)."""
    rng = np.random.default_rng(11)
    keys, seqs = _sorted_parts(rng, 8, 1 << 30, maxlen=40_000)
    order, merged = nc.merge_order(keys, seqs)
    want, _ = nc.gather([(keys, order, 0, len(order))], 8, len(order), True)
    results = [None] * 6

    def work(i):
        o, _m = nc.merge_order(keys, seqs)
        results[i] = nc.gather([(keys, o, 0, len(o))], 8, len(o), True)[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(r, want) for r in results)
    assert np.array_equal(np.sort(np.concatenate(keys)), merged)


def test_every_column_of_a_chunk_in_one_call():
    """gather_at with several columns (the compaction's path: the order read once for all)
    equals the numpy reference column by column, shuffled or not, with the max of one."""
    rng = np.random.default_rng(21)
    k, n = 5, 700
    dtypes = [np.int64, np.uint32, np.uint16, np.uint8, np.uint64]
    cols = [[rng.integers(0, 1 << 30, n).astype(dt) for _ in range(k)] for dt in dtypes]
    order = ((rng.integers(0, k, 400).astype(np.uint64) << np.uint64(nc.ROW_BITS))
             | rng.integers(0, n, 400).astype(np.uint64))
    lens = np.full(k, n, np.uint64)
    plan = np.zeros(3, nc.PIECE_DTYPE)
    plan["lens"] = nc.address(lens)
    plan["first"] = [123, 0, 0]
    plan["n"] = [40, 300, 400]
    plan["nparts"] = [1, 1, k]
    plan["order"] = [0, 0, nc.address(order)]
    chunk = 800
    for shuffle in (False, True):
        table = np.array([[nc.address(c[2]), nc.address(c[0])] + [nc.address(a) for a in c] for c in cols],
                         np.uint64)
        outs = [np.empty(chunk * np.dtype(dt).itemsize, np.uint8) for dt in dtypes]
        spec = np.zeros(len(dtypes), nc.COLUMN_DTYPE)
        spec["bases"] = [nc.address(table[i]) for i in range(len(dtypes))]
        spec["out"] = [nc.address(o) for o in outs]
        spec["itemsize"] = [np.dtype(dt).itemsize for dt in dtypes]
        spec["flags"] = (nc.SHUFFLE if shuffle else 0) | np.array([nc.MAX, 0, 0, 0, 0])
        assert nc.gather_at(plan, spec, chunk) == 740
        for i, dt in enumerate(dtypes):
            ref = [([cols[i][2]], None, 123, 40), ([cols[i][0]], None, 0, 300), (cols[i], order, 0, 400)]
            want, mx = nc.gather_numpy(ref, np.dtype(dt).itemsize, chunk, shuffle, want_max=i == 0)
            assert np.array_equal(outs[i], want), (dt, shuffle)
            if i == 0:
                assert spec["max"][0] == mx
