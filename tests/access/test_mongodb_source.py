"""The access layer over a MongoDB store (the same batches as the LMDB stores, written
through flowcept.store.mongodb into a real MongoDB-wire server, nx-27017; a real mongod
is not installable here) answers the questions exactly as the HDF5 archive does."""
import json
import os
import sys

import pytest

from access_support import ROOT
from questions import QUESTIONS, SORTS

sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def mongo_url(run_data, tmp_path_factory):
    from mongo_server import MongoServer, mongo_available
    ok, why = mongo_available()
    if not ok:
        pytest.skip(why)
    from flowcept.query.tasks import find_stores
    from flowcept.store import open_store, open_store_at
    with MongoServer(str(tmp_path_factory.mktemp("mongo"))) as srv:
        url = srv.url("access")
        dst = open_store("mongodb", url)
        try:
            for sp in find_stores(run_data["runs"]):
                with open_store_at(sp) as src:
                    dst.put_batches([(bytes(k), bytes(f)) for k, f in src.scan()])
        finally:
            dst.close()
        yield url


def test_mongodb_answers_like_the_archive(mongo_url, run_data):
    from flowcept.access.core import Access
    a = Access([mongo_url, run_data["h5"]])
    try:
        names = {s["kind"]: s["name"] for s in a.list_sources()}
        m, h = names["store"], names["archive"]
        for flt in QUESTIONS:
            for sort in SORTS:
                x, y = a.tasks(m, flt, sort=sort, limit=10_000), a.tasks(h, flt, sort=sort, limit=10_000)
                assert x["total"] == y["total"] and x["items"] == y["items"], json.dumps(flt)
        for by in ("activity", "rank"):
            assert a.stats(by, m)["items"] == a.stats(by, h)["items"]
        err = a.failures(h)["items"][0]["task_id"]
        assert a.lineage(err, "ancestors", m)["items"] == a.lineage(err, "ancestors", h)["items"]
        assert a.task(err, m) == a.task(err, h)
    finally:
        a.close()
