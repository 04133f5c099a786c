"""The keeper against a real redis-server: ingest, bad input, crash, takeover, signals."""
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time

import pytest

from flowcept.config import load_config
from flowcept.keeper import Keeper, read_status
from flowcept.store.quarantine import Quarantine
from flowcept.store import open_store
from support.framegen import frame_key, make_frame

pytestmark = pytest.mark.redis


def kcfg(srv, tmp_path, **kw):
    return load_config(env={}, transport="redis", transport_url=srv.url,
                       store_dir=str(tmp_path / "store"), **kw)


def xadd(client, frame, key=None, **extra):
    fields = {b"f": frame, b"key": key if key is not None else frame_key(frame), b"job": b"j",
              b"node": b"n"}
    fields.update(extra)
    return client.xadd("flowcept", fields)


def stored(tmp_path):
    with open_store("lmdb", str(tmp_path / "store"), readonly=True) as st:
        return {k: f for k, f in st.scan()}


def run_until_idle(keeper, idle=0.5):
    keeper.run(max_idle_s=idle)
    return keeper


def test_ingest_idempotent_and_ack_after_commit(redis_server, tmp_path):
    c = redis_server.client()
    frames = [make_frame(s, 50)[0] for s in range(12)]
    for f in frames:
        xadd(c, f)
    xadd(c, frames[3])                     # a redelivered batch
    k = run_until_idle(Keeper(kcfg(redis_server, tmp_path, lmdb_shards=3), name="k1"))
    assert k.counts["batches_in"] == 12 and k.counts["records_in"] == 600
    assert k.counts["duplicates"] == 1 and k.counts["acked"] == 13 and k.counts["rejected"] == 0
    got = stored(tmp_path)
    assert set(got) == {frame_key(f) for f in frames}
    assert c.xlen("flowcept") == 0         # acked and deleted
    info = c.xinfo_groups("flowcept")[0]
    assert info["pending"] == 0
    st = read_status(str(tmp_path / "store"), kcfg(redis_server, tmp_path))
    assert st["totals"]["records_in"] == 600 and len(st["shards"]) == 3
    assert sum(s["batches"] for s in st["shards"]) == 12
    assert st["sources"][0]["length"] == 0 and st["sources"][0]["groups"][0]["pending"] == 0


def test_bad_batches_are_quarantined_and_keeper_goes_on(redis_server, tmp_path):
    c = redis_server.client()
    good = [make_frame(s, 20)[0] for s in range(4)]
    corrupt = bytearray(make_frame(10, 20)[0])
    corrupt[500] ^= 0x55                                 # payload bit flip -> checksum
    truncated = make_frame(11, 20)[0][:-100]
    wrong_version = bytearray(make_frame(12, 20)[0])
    struct.pack_into("<H", wrong_version, 8, 99)
    bad_magic = b"NOTABATCH" * 20
    oversized = make_frame(13, 2000)[0]                   # > keeper_max_frame_bytes below
    mismatched = make_frame(14, 5)[0]
    xadd(c, good[0])
    xadd(c, bytes(corrupt), key=frame_key(make_frame(10, 20)[0]))
    xadd(c, truncated, key=b"x" * 24)
    xadd(c, good[1])
    xadd(c, bytes(wrong_version), key=b"y" * 24)
    xadd(c, bad_magic, key=b"z" * 24)
    xadd(c, oversized)
    xadd(c, mismatched, key=frame_key(good[0]))
    c.xadd("flowcept", {b"garbage": b"1"})               # no frame at all
    xadd(c, good[2])
    xadd(c, b"", key=b"e" * 24)                           # empty
    xadd(c, good[3])
    k = run_until_idle(Keeper(kcfg(redis_server, tmp_path, keeper_max_frame_bytes=65536), name="k"))
    assert k.counts["batches_in"] == 4 and k.counts["records_in"] == 80
    assert k.rejected == {"bad_checksum": 1, "bad_length": 2, "bad_version": 1,
                          "bad_magic_or_sizes": 1, "oversized": 1, "key_mismatch": 1,
                          "no_frame": 1}, k.rejected
    assert k.counts["rejected"] == 8 and k.counts["acked"] == 12
    assert set(stored(tmp_path)) == {frame_key(f) for f in good}
    q = Quarantine(str(tmp_path / "store"), readonly=True)
    items = list(q)
    q.close()
    assert sorted(i["reason"] for i in items) == sorted(
        ["bad_checksum", "bad_length", "bad_length", "bad_version", "bad_magic_or_sizes",
         "oversized", "key_mismatch", "no_frame"])
    by = {i["reason"]: i for i in items}
    assert by["bad_checksum"]["frame"] == bytes(corrupt) and by["bad_checksum"]["time_ns"] > 0
    assert by["oversized"]["size"] == len(oversized) and "65536" in by["oversized"]["detail"]
    assert by["bad_version"]["routing"]["key"] == (b"y" * 24).hex()
    st = read_status(str(tmp_path / "store"))
    assert st["rejected_by_reason"]["bad_length"] == 2 and st["quarantined"] == 8
    assert c.xlen("flowcept") == 0


def _keeper_cmd(srv, tmp_path, name, *extra):
    return [sys.executable, "-m", "flowcept", "keeper", "run", "--url", srv.url, "--store-dir",
            str(tmp_path / "store"), "--name", name, *extra]


def test_sigkill_mid_ingest_then_restart_redelivers_without_duplicates(redis_server, tmp_path):
    c = redis_server.client()
    n = 300
    frames = [make_frame(s, 2000, payloads=False)[0] for s in range(n)]
    pipe = c.pipeline(transaction=False)
    for f in frames:
        pipe.xadd("flowcept", {b"f": f, b"key": frame_key(f)})
    pipe.execute()
    p = subprocess.Popen(_keeper_cmd(redis_server, tmp_path, "kA", "--count", "4"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            groups = c.xinfo_groups("flowcept") if c.exists("flowcept") else []
            if groups and c.xlen("flowcept") < n - 20:
                break
            time.sleep(0.01)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=30)
    left = c.xlen("flowcept")
    assert 0 < left < n, left               # killed mid-ingest
    pending = c.xinfo_groups("flowcept")[0]["pending"]
    # restart under the same name: its pending entries come first
    r = subprocess.run(_keeper_cmd(redis_server, tmp_path, "kA", "--exit-when-idle", "1"),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = stored(tmp_path)
    assert set(got) == {frame_key(f) for f in frames}
    assert c.xlen("flowcept") == 0 and c.xinfo_groups("flowcept")[0]["pending"] == 0
    from flowcept.native.batch import Batch
    ids = [int(t) for f in got.values() for t in Batch(f).records["task_id"]]
    assert len(ids) == len(set(ids)) == n * 2000
    print(f"killed with {left} entries left, {pending} pending")


def test_dead_keeper_batches_taken_over_by_another(redis_server, tmp_path):
    c = redis_server.client()
    frames = [make_frame(s, 10)[0] for s in range(6)]
    for f in frames:
        xadd(c, f)
    c.xgroup_create("flowcept", "flowcept-keepers", id="0")
    # "dead" keeper: read them and never acknowledged
    c.xreadgroup("flowcept-keepers", "dead", {"flowcept": ">"}, count=6)
    assert c.xinfo_groups("flowcept")[0]["pending"] == 6
    time.sleep(0.3)
    k = run_until_idle(Keeper(kcfg(redis_server, tmp_path, keeper_claim_idle_ms=200), name="alive"))
    assert k.counts["batches_in"] == 6
    assert set(stored(tmp_path)) == {frame_key(f) for f in frames}
    assert c.xinfo_groups("flowcept")[0]["pending"] == 0


def test_two_keepers_split_one_stream(redis_server, tmp_path):
    """Two keeper processes (one consumer group, distinct names) on one store."""
    c = redis_server.client()
    frames = [make_frame(s, 500, payloads=False)[0] for s in range(200)]
    c.xgroup_create("flowcept", "flowcept-keepers", id="0", mkstream=True)
    procs = [subprocess.Popen(_keeper_cmd(redis_server, tmp_path, f"k{i}", "--count", "2",
                                          "--exit-when-idle", "2"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    try:
        # both keepers reading before the frames come (a keeper that starts late on a
        # loaded machine would find the other one done)
        deadline = time.monotonic() + 60
        while len(c.xinfo_consumers("flowcept", "flowcept-keepers")) < 2:
            assert time.monotonic() < deadline, "the keepers did not join the group in 60 s"
            time.sleep(0.05)
        pipe = c.pipeline(transaction=False)
        for f in frames:
            pipe.xadd("flowcept", {b"f": f, b"key": frame_key(f)})
        pipe.execute()
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
    assert all(p.returncode == 0 for p in procs), outs
    assert len(stored(tmp_path)) == 200
    st = read_status(str(tmp_path / "store"))
    assert {k["name"] for k in st["keepers"]} == {"k0", "k1"}
    assert all(k["acked"] > 0 for k in st["keepers"]), st["keepers"]
    assert st["totals"]["batches_in"] == 200 and st["totals"]["records_in"] == 100_000


def test_sigterm_commits_acks_and_exits_zero(redis_server, tmp_path):
    c = redis_server.client()
    p = subprocess.Popen(_keeper_cmd(redis_server, tmp_path, "kT"), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        frames = [make_frame(s, 100)[0] for s in range(30)]
        for f in frames:
            xadd(c, f)
        deadline = time.monotonic() + 30
        while c.xlen("flowcept") and time.monotonic() < deadline:
            time.sleep(0.02)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=30)
    assert p.returncode == 0, err
    assert "30 batches, 3000 records stored" in out
    with open(tmp_path / "store" / "keeper-kT.status.json") as f:
        st = json.load(f)
    assert st["running"] is False and st["batches_in"] == 30
    assert os.stat(tmp_path / "store" / "keeper-kT.status.json").st_mode & 0o077 == 0
    r = subprocess.run([sys.executable, "-m", "flowcept", "keeper", "status", "--store-dir",
                        str(tmp_path / "store"), "--url", redis_server.url],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "records in 3000" in r.stdout and "keeper kT (stopped" in r.stdout
    assert "pending 0" in r.stdout and "shard 000: 30 batches" in r.stdout


def test_keeper_survives_redis_restart(tmp_path):
    from support.redis_server import RedisServer
    with RedisServer(tmp_path / "r", extra_args=["--appendonly", "yes", "--appendfsync", "always"]) as srv:
        c = srv.client()
        k = Keeper(kcfg(srv, tmp_path), name="kr")
        th = threading.Thread(target=k.run)
        th.start()
        try:
            frames = [make_frame(s, 10)[0] for s in range(20)]
            for f in frames[:10]:
                xadd(c, f)
            time.sleep(0.5)
            srv.kill()
            time.sleep(0.5)
            srv.start()
            c = srv.client()
            for f in frames[10:]:
                xadd(c, f)
            deadline = time.monotonic() + 30
            while k.counts["batches_in"] < 20 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            k.stop()
            th.join(timeout=30)
        assert k.counts["batches_in"] == 20 and k.counts["transport_errors"] > 0
        assert set(stored(tmp_path)) == {frame_key(f) for f in frames}
