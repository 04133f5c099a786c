"""`flowcept drain` / `flowcept recover` and follow_job: exit when no ring
ever appears (and create no store), open the transport with the first ring,
report and skip a ring of another format version (-EPROTO)."""
import os
import struct
import subprocess
import sys
import threading
import time

import msgpack

from flowcept.config import load_config
from flowcept.native import lib
from flowcept.native.ring import Ring
from flowcept.node.recovery import follow_job, recover_job
from flowcept.query.tasks import read_tasks
from flowcept.record import job as jobs

FORMAT_VERSION_OFFSET = 8    # struct fc_ring_shm: char magic[8]; uint32_t format_version


def flowcept(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "flowcept", *args], capture_output=True, text=True,
                          timeout=timeout)


def make_ring(config, job, name, records=3, other_version=False):
    """A ring of job (closed by its producer) holding `records` task records."""
    d = jobs.ring_dir(config, job)
    os.makedirs(d, mode=0o700, exist_ok=True)
    path = os.path.join(d, name)
    ring = Ring.create(path, config, jobs.job_id_of(job), 0x5EED, 0)
    act = ring.intern("work")
    for i in range(records):
        data = msgpack.packb({"used": {"i": i}})
        assert lib.fc_ring_push_task(ring.handle, i + 1, 0, 0x5EED, 1000 + i, 2000 + i, 0, 0, act,
                                     0, 1, data, len(data)) == 0
    ring.close()
    if other_version:
        with open(path, "r+b") as f:
            f.seek(FORMAT_VERSION_OFFSET)
            f.write(struct.pack("<I", 99))
    return path


def test_drain_exits_when_no_ring_ever_appears_and_creates_no_store(run_dir):
    t0 = time.monotonic()
    r = flowcept("drain", "nojob", "--exit-when-idle", "1")
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert took < 20, took
    assert "nothing" in r.stdout or "0 records" in r.stdout
    assert not os.path.exists(os.path.join(run_dir, "nojob")), os.listdir(run_dir)


def test_follow_job_opens_the_transport_with_the_first_ring(run_dir):
    cfg = load_config()
    out = {}

    def leader():
        out["report"] = follow_job("late", cfg, exit_when_idle_s=3, poll_s=0.05)

    t = threading.Thread(target=leader)
    t.start()
    time.sleep(1.0)
    assert not os.path.exists(os.path.join(run_dir, "late"))   # no ring yet: no store
    make_ring(cfg, "late", "000000.1.ring", records=5)
    t.join(30)
    assert not t.is_alive()
    rep = out["report"]
    assert rep.ok and rep.records == 5 and rep.rings == 1, rep.describe()
    assert len(read_tasks(os.path.join(run_dir, "late"))) == 5


def test_drain_reports_and_skips_a_ring_of_another_format_version(run_dir):
    cfg = load_config()
    bad = make_ring(cfg, "vjob", "000000.1.ring", other_version=True)
    good = make_ring(cfg, "vjob", "000001.2.ring", records=4)
    r = flowcept("drain", "vjob", "--exit-when-idle", "1")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "another format version" in r.stdout and bad in r.stdout
    assert "drained 4 records from 1 ring(s)" in r.stdout, r.stdout
    assert os.path.exists(bad) and not os.path.exists(good)
    assert len(read_tasks(os.path.join(run_dir, "vjob"))) == 4


def test_recover_reports_a_ring_of_another_format_version_and_recovers_the_rest(run_dir):
    cfg = load_config()
    bad = make_ring(cfg, "rjob", "000000.1.ring", other_version=True)
    good = make_ring(cfg, "rjob", "000001.2.ring", records=6)
    rep = recover_job("rjob", config=cfg)
    assert not rep.ok and rep.records == 6 and rep.rings == 1
    assert any("another format version" in e and bad in e for e in rep.errors), rep.errors
    assert os.path.exists(bad) and not os.path.exists(good)   # drained ones are removed
    r = flowcept("recover", "rjob")
    assert r.returncode == 1 and "another format version" in r.stdout
    assert len(read_tasks(os.path.join(run_dir, "rjob"))) == 6


def test_recover_with_only_an_unreadable_ring_creates_no_store(run_dir):
    cfg = load_config()
    make_ring(cfg, "ujob", "000000.1.ring", other_version=True)
    rep = recover_job("ujob", config=cfg)
    assert not rep.ok and rep.records == 0
    assert not os.path.exists(os.path.join(run_dir, "ujob"))


def test_a_file_that_never_becomes_a_ring_is_reported_at_exit(run_dir):
    cfg = load_config()
    d = jobs.ring_dir(cfg, "gjob")
    os.makedirs(d, mode=0o700)
    junk = os.path.join(d, "000000.9.ring")
    fd = os.open(junk, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"\0" * 8192)
    os.close(fd)
    good = make_ring(cfg, "gjob", "000001.2.ring", records=2)
    r = flowcept("drain", "gjob", "--exit-when-idle", "1")
    assert r.returncode == 1 and "not a complete ring" in r.stdout and junk in r.stdout
    assert "drained 2 records from 1 ring(s)" in r.stdout and not os.path.exists(good)
