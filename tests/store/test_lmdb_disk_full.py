"""A store on a really full file system (a 2 MiB tmpfs, mounted for the test
when we may): StoreError naming the path and "free space", not a bare
"Input/output error"; a keeper on it retries and acknowledges nothing."""
import errno
import logging
import os
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "keeper"))

from flowcept.config import load_config  # noqa: E402
from flowcept.errors import StoreError  # noqa: E402
from flowcept.store.lmdb import LmdbStore  # noqa: E402
from hostile_frames import key_of, task_frame  # noqa: E402


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mnt)],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def fill(st, start=0, count=20):
    for s in range(start, start + count):
        f = task_frame(s, n=2000)
        st.put_batches([(key_of(f), f)])


def test_disk_full_is_a_store_error_naming_the_path_and_free_space(small_fs):
    path = str(small_fs / "store")
    st = LmdbStore(path, load_config(env={}, lmdb_map_size=64 << 20))
    try:
        with pytest.raises(StoreError) as ei:
            fill(st)
        msg = str(ei.value)
        assert path in msg and f"free space on {path}'s file system" in msg, msg
        assert "disk full" in msg and ei.value.errno == errno.ENOSPC
        assert "lmdb_map_size" not in msg
    finally:
        try:
            st.close()
        except Exception:
            pass


@pytest.mark.redis
def test_keeper_on_a_full_disk_retries_and_acks_nothing(small_fs, redis_server, caplog):
    from flowcept.keeper import Keeper
    c = redis_server.client()
    frames = [task_frame(s, n=2000) for s in range(20)]
    for f in frames:
        c.xadd("flowcept", {b"f": f, b"key": key_of(f)})
    store_dir = small_fs / "store"
    cfg = load_config(env={}, transport="redis", transport_url=redis_server.url,
                      store_dir=str(store_dir), lmdb_map_size=64 << 20)
    k = Keeper(cfg, name="fullfs", block_ms=50, count=20)
    caplog.set_level(logging.ERROR, logger="flowcept.keeper")
    t = threading.Thread(target=k.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while k.counts["store_errors"] < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    k.stop()
    t.join(30)
    assert not t.is_alive()
    assert k.counts["store_errors"] >= 2 and k.counts["rejected"] == 0
    assert "free space" in caplog.text and str(store_dir) in caplog.text
    assert k.counts["acked"] == 0 and c.xlen("flowcept") == 20
