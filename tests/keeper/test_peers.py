"""A keeper that replaces another one in another directory: batches the old
keeper committed but never acknowledged (killed in between) are found in
its directory (``peers``) and not stored twice; without peers they are
(readers drop them by batch id).  Real redis-server; the state after the
kill is made exactly: the old keeper's store holds the batches, and they
are pending at the source under the old keeper's name."""
import time

import pytest

from flowcept.config import load_config
from flowcept.keeper import Keeper, read_status
from flowcept.store import open_store
from support.framegen import frame_key, make_frame

pytestmark = pytest.mark.redis


def cfg(srv, **kw):
    return load_config(env={}, transport="redis", transport_url=srv.url,
                       keeper_claim_idle_ms=100, **kw)


def killed_after_commit(srv, old_dir, frames, committed):
    """The state a keeper leaves when SIGKILLed between its LMDB commit and
    its XACK: every frame pending under its name, `committed` in its store."""
    c = srv.client()
    for f in frames:
        c.xadd("flowcept", {b"f": f, b"key": frame_key(f), b"job": b"j", b"node": b"n"})
    c.xgroup_create("flowcept", "flowcept-keepers", id="0")
    c.xreadgroup("flowcept-keepers", "old", {"flowcept": ">"}, count=len(frames))
    with open_store("lmdb", old_dir, load_config(env={})) as st:
        st.put_batches([(frame_key(f), f) for f in committed])
    time.sleep(0.2)     # idle past keeper_claim_idle_ms: the new keeper claims them


def keys_in(path):
    with open_store("lmdb", path, readonly=True) as st:
        return sorted(k for k, _ in st.scan())


def test_replacement_with_the_old_directory_as_peer_stores_nothing_twice(redis_server, tmp_path):
    frames = [make_frame(s, 20)[0] for s in range(10)]
    old, new = str(tmp_path / "prov" / "keeper-a"), str(tmp_path / "prov" / "keeper-a2")
    killed_after_commit(redis_server, old, frames, committed=frames[:6])
    # the parent directory as peer: its own directory among them is skipped
    k = Keeper(cfg(redis_server), store_dir=new, name="a2", peers=[str(tmp_path / "prov")])
    k.run(max_idle_s=0.5)
    assert k.counts["peer_duplicates"] == 6 and k.counts["batches_in"] == 4
    assert k.counts["records_in"] == 80 and k.counts["acked"] == 10
    assert keys_in(new) == sorted(frame_key(f) for f in frames[6:])
    both = set(keys_in(old)) | set(keys_in(new))
    assert len(keys_in(old)) + len(keys_in(new)) == len(both) == 10     # each batch once
    c = redis_server.client()
    assert c.xinfo_groups("flowcept")[0]["pending"] == 0 and c.xlen("flowcept") == 0
    st = read_status(new)
    assert st["totals"]["peer_duplicates"] == 6 and st["keepers"][0]["peers"] == [old]


def test_replacement_without_peers_stores_them_again(redis_server, tmp_path):
    """The recipe that leaves duplicates across directories (readers drop them)."""
    frames = [make_frame(s, 20)[0] for s in range(10)]
    old, new = str(tmp_path / "keeper-b"), str(tmp_path / "keeper-b2")
    killed_after_commit(redis_server, old, frames, committed=frames[:6])
    k = Keeper(cfg(redis_server), store_dir=new, name="b2")
    k.run(max_idle_s=0.5)
    assert k.counts["batches_in"] == 10 and k.counts["peer_duplicates"] == 0
    assert set(keys_in(old)) < set(keys_in(new))


def test_a_peer_directory_that_appears_later_is_used(redis_server, tmp_path):
    frames = [make_frame(s, 20)[0] for s in range(4)]
    parent = tmp_path / "prov"
    k = Keeper(cfg(redis_server, lmdb_shards=2), store_dir=str(parent / "k1"), name="k1",
               peers=[str(parent)], status_interval=0.05)
    import threading
    th = threading.Thread(target=k.run)
    th.start()
    try:
        with open_store("lmdb", str(parent / "k0"), load_config(env={})) as st:   # appears now
            st.put_batches([(frame_key(f), f) for f in frames[:2]])
        deadline = time.monotonic() + 10
        while str(parent / "k0") not in k._peers and time.monotonic() < deadline:
            time.sleep(0.02)
        c = redis_server.client()
        for f in frames:
            c.xadd("flowcept", {b"f": f, b"key": frame_key(f)})
        while k.counts["acked"] < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        k.stop()
        th.join()
    assert k.counts["peer_duplicates"] == 2 and k.counts["batches_in"] == 2
