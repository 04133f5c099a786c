"""The read path over a MongoDB store (a real MongoDB-wire server, nx-27017; a
real mongod is not installable here) answers like the LMDB store and the
HDF5 archive of the same job.  The job is smaller than the million-task one
(10,000 tasks): nx-27017 is a Python server that takes minutes per million
inserted documents, which would measure it, not flowcept."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from flowcept.access.core import Access
from flowcept.query.tasks import find_stores

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "support"))
pytestmark = [pytest.mark.mongodb, pytest.mark.timeout(900)]

N = 10_000
QUESTIONS = [({"status": "ERROR"}, None), ({"rank": {"$in": [0, 5]}, "activity_id": "diffuse"}, "-end_ns"),
             ({"tags": "r3"}, "-rank,activity_id"), ({"used.step": {"$lt": 3}}, "started_at"),
             ({"$nor": [{"rank": {"$lt": 14}}]}, "-start_ns")]


@pytest.fixture(scope="module")
def three_stores(tmp_path_factory):
    from framegen import build_job_store
    from mongo_server import MongoServer, mongo_available
    ok, why = mongo_available()
    if not ok:
        pytest.skip(why)
    from flowcept.store import open_store, open_store_at
    base = str(tmp_path_factory.mktemp("mongo-readpath"))
    run = os.path.join(base, "runs", "job")
    build_job_store(os.path.join(run, "store", "node0"), N, batch_records=1024)
    h5 = os.path.join(base, "job.h5")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWCEPT_")}
    subprocess.run([sys.executable, "-m", "flowcept", "compact", run, "-o", h5], check=True,
                   capture_output=True, timeout=300, env=env)
    with MongoServer(os.path.join(base, "mongo")) as srv:
        url = srv.url("readpath")
        dst = open_store("mongodb", url)
        try:
            for sp in find_stores(run):
                with open_store_at(sp) as src:
                    dst.put_batches([(bytes(k), bytes(f)) for k, f in src.scan()])
        finally:
            dst.close()
        yield {"run": run, "h5": h5, "mongo": url}
    shutil.rmtree(base, ignore_errors=True)


def test_every_question_agrees_over_mongodb_lmdb_and_hdf5(three_stores):
    from flowcept.query.mongo import MONGO_ONLY, query as mongo_query
    from flowcept.query.search import query as store_query
    accs = [Access([three_stores[k]], query_timeout=0) for k in ("mongo", "run", "h5")]
    try:
        for flt, sort in QUESTIONS:
            pages = [a.tasks(filter=flt, sort=sort, limit=200, count=True) for a in accs]
            assert pages[0]["items"] == pages[1]["items"] == pages[2]["items"], json.dumps(flt)
            assert pages[0]["total"] == pages[1]["total"] == pages[2]["total"] > 0
            streams = [list(a.iter_tasks(filter=flt, sort=sort, max_stream=None)) for a in accs]
            assert streams[0] == streams[1] == streams[2]
            # MongoDB evaluating the filter itself (query.mongo) finds the same tasks
            server = mongo_query(three_stores["mongo"], filter=flt)
            mine = store_query(three_stores["run"], filter=flt)
            strip = [{k: v for k, v in d.items() if k not in MONGO_ONLY} for d in server]
            key = lambda d: d["task_id"]  # noqa: E731
            assert sorted(strip, key=key) == sorted(mine, key=key)
        for by in ("activity", "rank", "status"):
            stats = [a.stats(by)["items"] for a in accs]
            assert stats[0] == stats[1] == stats[2]
        summaries = [a.workflow_summary() for a in accs]
        for s in summaries:
            s.pop("source")
        assert summaries[0] == summaries[1] == summaries[2]
    finally:
        for a in accs:
            a.close()
