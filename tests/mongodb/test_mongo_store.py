"""The MongoDB store against a real MongoDB-wire server (nx-27017): idempotent
batches, Flowcept's collections and fields, the same answers as LMDB for
Flowcept-style queries (filters evaluated by the server) and as the HDF5
archive, and a keeper
writing LMDB and MongoDB at once from Kafka."""
import random
import subprocess
import sys
import uuid

import pytest

from flowcept.config import load_config
from flowcept.errors import StoreError
from flowcept.native.batch import Batch
from flowcept.store import open_store
from support.framegen import make_frame

pytestmark = pytest.mark.mongodb

WF = [0xA1, 0xB2]
T0 = 1_700_000_000_000_000_000


def frames(n=24, per=30):
    rng = random.Random(3)
    out = []
    for seq in range(n):
        rank = seq % 4
        f, _, _ = make_frame(seq, per, ring_uid=rank + 1, rank=rank, workflow_id=WF[seq % 2],
                             node=f"n{rank // 2}", t0=T0, rng=rng, origin=rank)
        out.append((Batch(f).key, f))
    return out


def strip(doc):
    return {k: v for k, v in doc.items() if k not in ("campaign_id", "node", "job", "_id")}


def test_batches_idempotent_and_flowcept_fields(mongo_server, tmp_path):
    items = frames(8, 20)
    url = mongo_server.url(f"db{uuid.uuid4().hex[:6]}")
    with open_store("mongodb", url, load_config(env={})) as st:
        assert st.put_batches(items[:5]) == 5
        assert st.put_batches(items) == 3                 # the first five are skipped
        assert st.has(items[0][0]) and not st.has(b"\0" * 24)
        assert [k for k, _ in st.scan()] == sorted(k for k, _ in items)
        assert {k: f for k, f in st.scan()} == dict(items)
        assert len(list(st.summaries())) == 8
        s = st.stats()
        assert (s["batches"], s["tasks"]) == (8, 160)
    c = mongo_server.client()
    db = c[url.rsplit("/", 1)[1]]
    doc = db.tasks.find_one({"activity_id": {"$exists": True}})
    for field in ("task_id", "workflow_id", "campaign_id", "activity_id", "used", "generated",
                  "started_at", "ended_at", "status", "hostname", "rank", "node", "job"):
        assert field in doc, field
    assert doc["status"] in ("FINISHED", "ERROR") and doc["hostname"] == doc["node"]
    idx = {tuple(i["key"].keys())[0] for i in db.tasks.list_indexes()}
    assert {"workflow_id", "activity_id", "started_at", "status"} <= idx
    # a batch whose commit was interrupted after its tasks, before its marker, completes
    db.batches.delete_one({"_id": items[7][0].hex()})
    with open_store("mongodb", url, load_config(env={})) as st:
        assert st.put_batches([items[7]]) == 1
    assert db.tasks.count_documents({}) == 160


def test_unreachable_server_names_the_fix():
    from support.mongo_server import free_port
    with pytest.raises(StoreError, match="unreachable.*fix store_url"):
        open_store("mongodb", f"mongodb://127.0.0.1:{free_port()}/x",
                   load_config(env={}, mongodb_timeout_ms=300))
    with pytest.raises(StoreError, match="not a MongoDB URL"):
        open_store("mongodb", "redis://127.0.0.1:1/0", load_config(env={}))


QUERIES = [
    dict(filter={"activity_id": "diffuse"}),
    dict(filter={"rank": {"$in": [0, 3]}, "status": "ERROR"}),
    dict(filter={"rank": {"$gte": 1, "$lt": 3}}),
    dict(filter={"workflow_id": f"{WF[1]:016x}"}),
    dict(filter={"started_at": {"$gte": (T0 + 10 * 10_000_000) / 1e9}}),
    dict(filter={"$or": [{"activity_id": "io", "rank": 1}, {"tags": {"$in": ["t3"]}}]}),
    dict(filter={"used.i": {"$lt": 3}}),
    dict(activity="residual", rank=2),
    dict(workflow=WF[0], limit=7),
]


@pytest.mark.parametrize("q", QUERIES, ids=[str(i) for i in range(len(QUERIES))])
def test_flowcept_queries_same_from_lmdb_mongodb_and_archive(mongo_server, tmp_path, q):
    from flowcept.query.mongo import query as mquery
    from flowcept.query.search import query as lquery
    items = frames()
    lpath = str(tmp_path / "store")
    with open_store("lmdb", lpath, load_config(env={})) as st:
        st.put_batches(items)
    url = mongo_server.url("q")
    with open_store("mongodb", url, load_config(env={})) as st:
        st.put_batches(items)
    want = lquery(lpath, **q)
    got = mquery(url, **q)
    assert want, q                                   # each query selects something
    assert [strip(d) for d in got] == want
    assert len(got) < 24 * 30 or not q.get("filter")  # the server filtered
    if set(q) == {"filter"}:                         # and the HDF5 archive of the same store
        pytest.importorskip("h5py", reason="the archive needs h5py (pip install 'flowcept[hdf5]')")
        from flowcept.archive.compact import compact
        from flowcept.archive.hdf5 import Archive
        compact(lpath, str(tmp_path / "a.h5"), job="j")
        with Archive(str(tmp_path / "a.h5")) as a:
            assert sorted(a.query(q["filter"]).task_ids()) == sorted(d["task_id"] for d in got)


def test_captured_workflow_same_from_lmdb_and_mongodb(mongo_server, tmp_path, run_dir):
    """Real capture (decorated functions, a workflow with a campaign) into the
    job's LMDB store; the same batches into MongoDB: same tasks, workflows, campaign."""
    from flowcept import Flowcept, flowcept_task
    from flowcept.query.mongo import query as mquery
    from flowcept.query.mongo import workflows as mworkflows
    from flowcept.query.tasks import find_stores, read_tasks, read_workflows
    from flowcept.store import open_store_at

    @flowcept_task
    def step(i, x=1.5):
        return {"y": i * x}

    with Flowcept(workflow_name="mwf", campaign_id="camp-1"):
        for i in range(50):
            step(i)
    (lpath,) = find_stores(run_dir)
    url = mongo_server.url("cap")
    with open_store_at(lpath) as src, open_store("mongodb", url, load_config(env={})) as dst:
        assert dst.put_batches(list(src.scan())) >= 1
        assert dst.workflows() == src.workflows()
    lt = sorted(read_tasks(lpath), key=lambda d: d["task_id"])
    mt = sorted(mquery(url), key=lambda d: d["task_id"])
    assert len(lt) == 50 and [strip(d) for d in mt] == lt
    assert {d["campaign_id"] for d in mt} == {"camp-1"}       # joined from the workflow
    (wf,) = mworkflows(url)
    (lwf,) = read_workflows(lpath).values()
    assert wf["name"] == lwf["name"] == "mwf" and wf["campaign_id"] == "camp-1"
    assert mquery(url, filter={"used.i": {"$gte": 45}}, sort=[("used.i", 1)])[0]["used"]["i"] == 45


@pytest.mark.kafka
def test_keeper_writes_lmdb_and_mongodb_from_kafka(mongo_server, tmp_path):
    from support.kafka_server import KafkaServer, kafka_available
    ok, why = kafka_available()
    if not ok:
        pytest.skip(why)
    from flowcept.keeper import read_status
    from flowcept.query.mongo import query as mquery
    from flowcept.query.search import query as lquery
    from flowcept.record.job import JobInfo
    from flowcept.transport.kafka import KafkaTransport
    items = frames(16, 25)
    with KafkaServer(tmp_path / "kafka") as ks:
        url = ks.url("t")
        group = f"g-{uuid.uuid4().hex[:6]}"
        cfg = load_config(env={}, transport="kafka", transport_url=url)
        tr = KafkaTransport(cfg, JobInfo("j", 7, "n0", ""))
        for k, f in items + items[:3]:           # three published twice
            tr.publish(k, f)
        tr.close()
        lpath = str(tmp_path / "store")
        murl = mongo_server.url("kp")
        r = subprocess.run([sys.executable, "-m", "flowcept", "keeper", "run", "--url", url,
                            "--store", "lmdb", "--store-dir", lpath, "--store", "mongodb",
                            "--store-url", murl, "-o", f"kafka_group={group}",
                            "--exit-when-idle", "7"], capture_output=True, text=True, timeout=90)
        assert r.returncode == 0, r.stderr
        assert "16 batches, 400 records stored, 3 duplicates skipped" in r.stdout, r.stdout
    assert read_status(lpath)["totals"]["records_in"] == 400
    lt = lquery(lpath)
    mt = mquery(murl)
    assert len(lt) == len(mt) == 400
    assert sorted(d["task_id"] for d in lt) == sorted(d["task_id"] for d in mt)


def test_flowcept_query_cli_reads_mongodb_like_lmdb(mongo_server, tmp_path):
    import json
    items = frames(8, 20)
    lpath = str(tmp_path / "store")
    with open_store("lmdb", lpath, load_config(env={})) as st:
        st.put_batches(items)
    url = mongo_server.url("cli")
    with open_store("mongodb", url, load_config(env={})) as st:
        st.put_batches(items)
        pushed = st.find_tasks({"activity_id": "io", "rank": {"$in": [1, 2]}})
    flt = json.dumps({"activity_id": "io", "rank": {"$in": [1, 2]}})
    outs = []
    for where in (lpath, url):
        r = subprocess.run([sys.executable, "-m", "flowcept", "query", where, "-f", flt,
                            "--format", "jsonl", "--all"], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        outs.append(sorted(json.loads(ln)["task_id"] for ln in r.stdout.splitlines() if ln.strip()))
    assert outs[0] and outs[0] == outs[1] == sorted(d["task_id"] for d in pushed)


def test_summaries_keep_ids_past_63_bits_as_ints(mongo_server):
    from flowcept.store.summary import summarize
    f, _, _ = make_frame(1, 10, workflow_id=(1 << 64) - 5, origin=0xFFFF)
    key = Batch(f).key
    with open_store("mongodb", mongo_server.url("big"), load_config(env={})) as st:
        st.put_batches([(key, f)])
        ((k, s),) = list(st.summaries())
    assert k == key and s == summarize(Batch(f))
