"""``flowcept keeper run --workers N`` (several keeper processes on one host,
one directory each) and the progress line on a terminal; real redis-server."""
import os
import pty
import signal
import subprocess
import sys
import time

import pytest

from flowcept.keeper import read_status
from flowcept.store import open_store, store_dirs_at
from support.framegen import frame_key, make_frame

pytestmark = pytest.mark.redis

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def keeper_cmd(srv, store, *extra):
    return [sys.executable, "-m", "flowcept", "keeper", "run", "--url", srv.url,
            "--store-dir", store, *extra]


def fill(srv, n, records=200):
    c = srv.client()
    frames = [make_frame(s, records, payloads=False)[0] for s in range(n)]
    pipe = c.pipeline(transaction=False)
    for f in frames:
        pipe.xadd("flowcept", {b"f": f, b"key": frame_key(f)})
    pipe.execute()
    return frames


def stored_keys(store):
    keys = []
    for d in store_dirs_at(store):
        with open_store("lmdb", d, readonly=True) as st:
            keys += [k for k, _ in st.scan()]
    return keys


def test_workers_split_the_stream_each_batch_once(redis_server, tmp_path):
    store = str(tmp_path / "store")
    c = redis_server.client()
    c.xgroup_create("flowcept", "flowcept-keepers", id="0", mkstream=True)
    p = subprocess.Popen(keeper_cmd(redis_server, store, "--workers", "3", "--name", "kw",
                                    "--count", "2", "--exit-when-idle", "2"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while len(c.xinfo_consumers("flowcept", "flowcept-keepers")) < 3:
            assert time.monotonic() < deadline and p.poll() is None, p.stderr.read()
            time.sleep(0.05)
        frames = fill(redis_server, 150)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    assert "keeper kw (3 workers): 150 batches, 30000 records stored" in out
    assert sorted(stored_keys(store)) == sorted(frame_key(f) for f in frames)   # each once
    dirs = store_dirs_at(store)
    assert [os.path.basename(d) for d in dirs] == ["worker-00", "worker-01", "worker-02"]
    per = [read_status(d)["totals"]["batches_in"] for d in dirs]
    # split between the workers (on a loaded machine one may be starved: two at least)
    assert sum(per) == 150 and sum(n > 0 for n in per) >= 2, per
    assert read_status(dirs[0])["keepers"][0]["peers"] == dirs[1:]


def test_a_dead_worker_stops_the_others_with_the_fix(redis_server, tmp_path):
    store = str(tmp_path / "store")
    p = subprocess.Popen(keeper_cmd(redis_server, store, "--workers", "2", "--name", "kd"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        status = os.path.join(store, "worker-01", "keeper-kd-w01.status.json")
        while not os.path.exists(status):
            assert time.monotonic() < deadline and p.poll() is None, p.stderr.read()
            time.sleep(0.05)
        import json
        with open(status) as f:
            pid = json.load(f)["pid"]
        os.kill(pid, signal.SIGKILL)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 1
    assert "worker kd-w01" in err and "same --name and --store-dir" in err


def test_sigterm_stops_every_worker_cleanly(redis_server, tmp_path):
    store = str(tmp_path / "store")
    fill(redis_server, 20)
    p = subprocess.Popen(keeper_cmd(redis_server, store, "--workers", "2", "--name", "kt"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        c = redis_server.client()
        deadline = time.monotonic() + 60
        while c.xlen("flowcept"):
            assert time.monotonic() < deadline and p.poll() is None, p.stderr.read()
            time.sleep(0.05)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    assert "20 batches, 4000 records stored" in out
    assert all(not k["running"] for d in store_dirs_at(store) for k in read_status(d)["keepers"])


def _run_with_stderr(args, tty, timeout=60):
    """(returncode, what the command wrote to stderr), stderr a terminal or a pipe."""
    if tty:
        master, slave = pty.openpty()
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=slave, cwd=ROOT)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        os.close(master)
        return p.wait(timeout=timeout), b"".join(chunks).decode(errors="replace")
    r = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                       timeout=timeout, cwd=ROOT)
    return r.returncode, r.stderr


@pytest.mark.parametrize("tty", [True, False])
def test_progress_line_on_a_terminal_only(redis_server, tmp_path, tty):
    fill(redis_server, 30)
    rc, err = _run_with_stderr(keeper_cmd(redis_server, str(tmp_path / "s"), "--name", "kp",
                                          "--exit-when-idle", "1.5", "--progress-interval", "0.3"),
                               tty)
    assert rc == 0, err
    if tty:
        assert "keeper kp: 6,000 records, 30 batches" in err and "k records/s" in err
        assert "lag 0 entries" in err
    else:
        assert err == ""


def test_wait_for_the_hub_then_sigusr1_reads_what_is_left_and_exits(tmp_path):
    """A job step: the keeper starts before its hub (--wait), the job fills the
    hub, then SIGUSR1 ("the producers are done"): it stores everything, exits 0."""
    from support.redis_server import RedisServer, free_port
    port = free_port()
    store = str(tmp_path / "store")
    url = f"redis://127.0.0.1:{port}/0"
    p = subprocess.Popen([sys.executable, "-m", "flowcept", "keeper", "run", "--url", url,
                          "--store-dir", store, "--name", "kj", "--wait", "60"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        time.sleep(1.5)
        assert p.poll() is None                   # still waiting for the hub
        with RedisServer(tmp_path / "r", port=port) as srv:
            frames = fill(srv, 40)
            p.send_signal(signal.SIGUSR1)
            out, err = p.communicate(timeout=120)
            assert srv.client().xlen("flowcept") == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    assert "40 batches, 8000 records stored" in out
    assert sorted(stored_keys(store)) == sorted(frame_key(f) for f in frames)
