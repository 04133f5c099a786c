"""A keeper against a real redis-server, fed frames that pass the frame
validator but carry hostile contents: it stays live, stores exactly the valid
batches, quarantines each hostile one alone with its reason, and retries only
real store errors."""
import itertools
import logging
import os
import threading
import time

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings, strategies as hs

from flowcept.config import load_config
from flowcept.keeper import Keeper
from flowcept.store.quarantine import Quarantine
from flowcept.query.tasks import read_tasks, read_workflows
from flowcept.store import open_store
from hostile_frames import (HOSTILE_TASK, HOSTILE_WORKFLOW, READER_ONLY_TASK, deep, key_of,
                            task_frame)

pytestmark = pytest.mark.redis

_streams = itertools.count()


def kcfg(srv, store_dir, stream, **kw):
    return load_config(env={}, transport="redis", transport_url=srv.url, store_dir=str(store_dir),
                       redis_stream=stream, **kw)


def push(client, stream, frames):
    pipe = client.pipeline(transaction=False)
    for f in frames:
        pipe.xadd(stream, {b"f": f, b"key": key_of(f), b"job": b"j", b"node": b"n"})
    pipe.execute()


def stored_keys(store_dir):
    with open_store("lmdb", str(store_dir), readonly=True) as st:
        return {bytes(k) for k, _ in st.scan()}


def quarantined(store_dir):
    q = Quarantine(str(store_dir), readonly=True)
    try:
        return list(q)
    finally:
        q.close()


def run_keeper(srv, store_dir, stream, idle=0.4, count=16, **kw):
    k = Keeper(kcfg(srv, store_dir, stream, **kw), name="hk", block_ms=50, count=count)
    t0 = time.monotonic()
    k.run(max_idle_s=idle)
    return k, time.monotonic() - t0


# -- the property ------------------------------------------------------------

hostile = hs.one_of(
    hs.sampled_from(sorted(HOSTILE_WORKFLOW)).map(lambda n: ("workflow", n, HOSTILE_WORKFLOW[n])),
    hs.sampled_from(sorted(HOSTILE_TASK)).map(lambda n: ("task", n, HOSTILE_TASK[n])),
    hs.binary(min_size=1, max_size=64).map(lambda b: ("workflow", "random", b"\xc1" + b)),
    hs.integers(1100, 4000).map(lambda d: ("task", "deep", deep(d))),      # > msgpack's stack
    hs.integers(600, 4000).map(lambda d: ("workflow", "deep", deep(d))),
    hs.integers(1, 2 ** 31).map(lambda n: ("workflow", "huge_bin",
                                           b"\xc6" + (n + 64).to_bytes(4, "big") + b"x" * 8)))
valid = hs.one_of(
    hs.just(("plain", None, None)),
    hs.dictionaries(hs.integers(-5, 5), hs.text(max_size=5), min_size=1, max_size=3).map(
        lambda d: ("workflow", "int_keys", msgpack.packb({**d, "name": "wf"}))),
    hs.binary(min_size=1, max_size=16).map(lambda b: ("opaque", "c_api", b)),
    hs.sampled_from(sorted(READER_ONLY_TASK)).map(lambda n: ("odd_task", n, READER_ONLY_TASK[n])))
frames_plan = hs.lists(hs.tuples(hs.booleans(), hostile, valid), min_size=1, max_size=12)


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(plan=frames_plan)
def test_keeper_property_hostile_contents_interleaved(redis_server, tmp_path, plan):
    n = next(_streams)
    stream, store_dir = f"hp{n}", tmp_path / f"store{n}"
    frames, good, bad, odd = [], set(), 0, 0
    for seq, (is_bad, (kind, _name, data), (vkind, _vname, vdata)) in enumerate(plan):
        if is_bad:
            f = (task_frame(seq, workflow=data) if kind == "workflow"
                 else task_frame(seq, bad_task=data))
            bad += 1
        else:
            f = task_frame(seq, workflow=vdata if vkind == "workflow" else None,
                           opaque=vdata if vkind == "opaque" else None,
                           bad_task=vdata if vkind == "odd_task" else None)
            odd += vkind == "odd_task"
            good.add(key_of(f))
        frames.append(f)
    push(redis_server.client(), stream, frames)
    k, took = run_keeper(redis_server, store_dir, stream, count=5)
    assert took < 30, f"keeper took {took:.1f}s"
    assert k.counts["store_errors"] == 0
    assert stored_keys(store_dir) == good
    q = quarantined(store_dir)
    assert len(q) == bad and all(i["reason"] == "bad_payload" for i in q), q[:2]
    assert k.counts["acked"] == len(frames)
    client = redis_server.client()
    assert client.xlen(stream) == 0 and client.xinfo_groups(stream)[0]["pending"] == 0
    if good:   # what was stored reads back: tasks and workflow documents
        stats = {}
        assert len(read_tasks(str(store_dir), stats=stats)) >= 4 * len(good)
        assert stats["payload_errors"] == odd
        read_workflows(str(store_dir))


# -- examples ------------------------------------------------------------------

@pytest.mark.parametrize("kind,name", [("workflow", n) for n in sorted(HOSTILE_WORKFLOW)]
                         + [("task", n) for n in sorted(HOSTILE_TASK)])
def test_each_hostile_kind_is_quarantined_alone_with_its_reason(redis_server, tmp_path, kind, name):
    data = (HOSTILE_WORKFLOW if kind == "workflow" else HOSTILE_TASK)[name]
    bad = task_frame(1, workflow=data) if kind == "workflow" else task_frame(1, bad_task=data)
    goods = [task_frame(0), task_frame(2)]
    push(redis_server.client(), "s", [goods[0], bad, goods[1]])   # one read holds all three
    k, _ = run_keeper(redis_server, tmp_path / "store", "s", count=16)
    assert stored_keys(tmp_path / "store") == {key_of(f) for f in goods}
    q = quarantined(tmp_path / "store")
    assert [i["reason"] for i in q] == ["bad_payload"]
    assert q[0]["frame"] == bad and f"({kind})" in q[0]["detail"], q[0]["detail"]
    assert k.counts["batches_in"] == 2 and k.counts["rejected"] == 1 and k.counts["acked"] == 3


def test_int_keyed_workflow_documents_store_merge_and_read(redis_server, tmp_path):
    f1 = task_frame(0, workflow=msgpack.packb({1: "one", "name": "a", "nested": {2: [3]}}))
    f2 = task_frame(1, workflow=msgpack.packb({"name": "b", 7: True}))
    push(redis_server.client(), "s", [f1])
    run_keeper(redis_server, tmp_path / "store", "s")
    push(redis_server.client(), "s", [f2])       # the merge with the stored int-keyed doc
    k, _ = run_keeper(redis_server, tmp_path / "store", "s")
    assert k.counts["store_errors"] == 0 and k.counts["rejected"] == 0
    wfs = read_workflows(str(tmp_path / "store"))
    assert wfs == {f"{0xABC:016x}": {1: "one", "name": "b", "nested": {2: [3]}, 7: True}}


def test_store_refusal_is_bisected_to_the_one_bad_entry(redis_server, tmp_path, monkeypatch):
    """Without the keeper's own contents check, the store's stage() refuses
    the hostile workflow record: the transaction is split until it stands
    alone, and only it is quarantined."""
    import flowcept.keeper.service as service
    monkeypatch.setattr(service, "check_records", lambda records, payload: None)
    goods = [task_frame(s) for s in range(7)]
    bad = task_frame(20, workflow=msgpack.packb(["not", "a", "map"]))
    frames = goods[:5] + [bad] + goods[5:]
    push(redis_server.client(), "s", frames)
    k, _ = run_keeper(redis_server, tmp_path / "store", "s", count=16)
    assert stored_keys(tmp_path / "store") == {key_of(f) for f in goods}
    q = quarantined(tmp_path / "store")
    assert [i["reason"] for i in q] == ["store_refused"]
    assert q[0]["frame"] == bad and "map" in q[0]["detail"]
    assert k.counts["batches_in"] == 7 and k.counts["records_in"] == 28
    assert k.counts["acked"] == 8 and k.counts["store_errors"] == 0


def test_map_full_is_retried_with_the_fix_in_the_log_and_nothing_acked(redis_server, tmp_path,
                                                                         caplog):
    big = [task_frame(s, n=3000) for s in range(12)]       # ~ 1 MB each, map is 1 MiB
    push(redis_server.client(), "s", big)
    cfg = kcfg(redis_server, tmp_path / "store", "s", lmdb_map_size=1 << 20)
    k = Keeper(cfg, name="full", block_ms=50, count=4)
    caplog.set_level(logging.ERROR, logger="flowcept.keeper")
    t = threading.Thread(target=k.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while k.counts["store_errors"] < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    k.stop()
    t.join(20)
    assert not t.is_alive()
    assert k.counts["store_errors"] >= 2 and k.counts["rejected"] == 0
    text = caplog.text
    assert "StoreError" in text and "lmdb_map_size" in text and str(tmp_path / "store") in text
    client = redis_server.client()
    assert client.xlen("s") == 12 - k.counts["acked"]
    assert k.counts["acked"] < 12
    assert len(quarantined(tmp_path / "store")) == 0


@pytest.mark.parametrize("name", sorted(READER_ONLY_TASK))
def test_well_formed_task_payloads_python_cannot_decode_are_stored_and_counted_by_readers(
        redis_server, tmp_path, name):
    f = task_frame(1, bad_task=READER_ONLY_TASK[name])
    push(redis_server.client(), "s", [f])
    k, _ = run_keeper(redis_server, tmp_path / "store", "s")
    assert stored_keys(tmp_path / "store") == {key_of(f)} and k.counts["rejected"] == 0
    stats = {}
    docs = read_tasks(str(tmp_path / "store"), stats=stats)
    assert len(docs) == 5 and stats["payload_errors"] == 1
    assert [d["payload"] for d in docs if "payload_error" in d] == [READER_ONLY_TASK[name]]


def test_a_stream_of_hostile_frames_does_not_slow_a_keeper_down(redis_server, tmp_path):
    """200 hostile frames (mixed kinds) among 200 good ones: a bounded time."""
    kinds = list(HOSTILE_WORKFLOW.values())
    frames, good = [], set()
    for s in range(400):
        if s % 2:
            frames.append(task_frame(s, workflow=kinds[s % len(kinds)]))
        else:
            f = task_frame(s)
            good.add(key_of(f))
            frames.append(f)
    push(redis_server.client(), "s", frames)
    k, took = run_keeper(redis_server, tmp_path / "store", "s", count=64)
    assert stored_keys(tmp_path / "store") == good
    assert k.counts["rejected"] == 200 and k.counts["acked"] == 400
    assert took < 20, took
