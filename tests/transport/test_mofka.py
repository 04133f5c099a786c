"""The Mofka transport: everything testable without Mofka (config checks,
metadata encoding, generation detection, the push/flush contract against
fake client modules shaped like the real ones), plus live tests that run
only where Mofka's Python client is installed."""
import importlib
import os
import sys
import types

import pytest

from flowcept.config import ConfigError, load_config
from flowcept.transport import JobInfo, TransportUnavailable, open_transport
from flowcept.transport import mofka as M
from support.framegen import frame_key, make_frame

JOB = JobInfo(job_name="j9", job_id=9, node="nodeM", run_dir="/nonexistent")


def mcfg(**kw):
    base = dict(transport="mofka", mofka_group_file="/tmp/mofka.json", mofka_topic="flowcept",
                mofka_protocol="na+sm")
    base.update(kw)
    return load_config(env={}, **base)


def _have_mofka():
    for name in (M.GEN_DIASPORA, M.GEN_CLIENT):
        try:
            importlib.import_module(name)
            return True
        except ImportError:
            continue
    return False


@pytest.mark.parametrize("proto", ["na+sm", "ofi+tcp", "ofi+verbs", "cxi", "ofi+cxi",
                                   "ofi+tcp://10.0.0.1:1234"])
def test_protocols_accepted(proto):
    assert M.check_protocol(proto) == proto


@pytest.mark.parametrize("proto", ["", "na sm", "NA+SM", "tcp;rm -rf", "+tcp"])
def test_bad_protocols_rejected(proto):
    with pytest.raises(ConfigError, match="mofka_protocol"):
        M.check_protocol(proto)


def test_config_needs_group_file():
    with pytest.raises(ConfigError, match="mofka_group_file"):
        M.check_config(mcfg(mofka_group_file=""))
    M.check_config(mcfg())


def test_metadata_roundtrip_is_small_json():
    import json
    key = bytes(range(24))
    meta = M.encode_metadata(key, "job", "node1", 12345)
    text = json.dumps(meta)
    assert len(text) < 160
    for form in (meta, text, text.encode()):
        back = M.decode_metadata(form)
        assert back["key"] == key and back["job"] == "job" and back["node"] == "node1"
        assert back["len"] == 12345 and back["v"] == 1
    with pytest.raises(ValueError):
        M.decode_metadata("[1, 2]")


def test_generation_detection_prefers_diaspora():
    mods = {M.GEN_DIASPORA: "new", M.GEN_CLIENT: "old"}

    def importer(available):
        def imp(name):
            if name in available:
                return mods[name]
            raise ImportError(f"No module named {name!r}")
        return imp

    assert M.detect_generation(importer({M.GEN_DIASPORA, M.GEN_CLIENT})) == (M.GEN_DIASPORA, "new")
    assert M.detect_generation(importer({M.GEN_CLIENT})) == (M.GEN_CLIENT, "old")
    with pytest.raises(TransportUnavailable) as ei:
        M.detect_generation(importer(set()))
    assert "diaspora_stream.api" in str(ei.value) and "mochi.mofka.client" in str(ei.value)
    assert "transport=redis" in str(ei.value)


@pytest.mark.skipif(_have_mofka(), reason="Mofka is installed here")
def test_absent_mofka_gives_a_clear_error():
    with pytest.raises(TransportUnavailable, match="needs Mofka's Python client"):
        open_transport("mofka", mcfg(), JOB)


# -- fake client modules, shaped like the real ones (see flowcept/transport/mofka.py) ---
class _Future:
    def __init__(self, value, log):
        self.value, self.log = value, log

    def wait(self):
        self.log.append("wait")
        return self.value


class _Producer:
    def __init__(self, log):
        self.log = log
        self.held = []       # what Mofka would read at flush: (metadata, data object)

    def push(self, metadata, data=None):
        self.held.append((metadata, data))
        self.log.append("push")
        return _Future(len(self.held) - 1, self.log)

    def flush(self):
        # Mofka reads the data now: it must still be the frame that was pushed
        for meta, data in self.held:
            assert isinstance(data, bytes) and len(data) == meta["len"]
            self.log.append(("flushed", meta["key"], bytes(data)))
        self.held = []


class _Topic:
    def __init__(self, log):
        self.log = log
        self.producer_args = None
        self.prod = _Producer(log)

    def producer(self, *args, **kwargs):
        self.producer_args = (args, kwargs)
        return self.prod


def _fake_diaspora(log):
    mod = types.ModuleType("diaspora_stream.api")

    class Driver:
        opened = []

        @staticmethod
        def new(backend, metadata=None):
            d = Driver()
            d.backend, d.options = backend, metadata
            Driver.opened.append(d)
            return d

        def open_topic(self, name):
            self.topic = _Topic(log)
            self.topic_name = name
            return self.topic

    mod.Driver = Driver
    mod.Ordering = types.SimpleNamespace(Loose="loose", Strict="strict")
    return mod


def test_push_keeps_frames_alive_until_flush_diaspora(monkeypatch):
    log = []
    mod = _fake_diaspora(log)
    pkg = types.ModuleType("diaspora_stream")
    pkg.api = mod
    monkeypatch.setitem(sys.modules, "diaspora_stream", pkg)
    monkeypatch.setitem(sys.modules, "diaspora_stream.api", mod)
    t = open_transport("mofka", mcfg(mofka_protocol="ofi+tcp"), JOB)
    d = mod.Driver.opened[-1]
    assert d.backend == "mofka" and d.options["group_file"] == "/tmp/mofka.json"
    assert d.options["margo"]["use_progress_thread"] is True and d.topic_name == "flowcept"
    frames = [make_frame(s, 4)[0] for s in range(3)]
    buf = bytearray(max(map(len, frames)))
    for f in frames:
        buf[:len(f)] = f                                   # the caller reuses its buffer ...
        t.publish(frame_key(f), memoryview(buf)[:len(f)])
    buf[:] = b"\0" * len(buf)                              # ... and scribbles on it
    assert len(t._pending) == 3
    t.flush()
    flushed = [e for e in log if isinstance(e, tuple)]
    assert [e[2] for e in flushed] == frames               # Mofka saw the intact frames
    assert [e[1] for e in flushed] == [frame_key(f).hex() for f in frames]
    assert log.count("wait") == 3 and t._pending == []
    t.close()


def test_old_generation_uses_margo_engine(monkeypatch):
    log = []
    client = types.ModuleType("mochi.mofka.client")
    made = {}

    class MofkaDriver:
        def __init__(self, group_file, engine):
            made["driver"] = (group_file, engine)

        def open_topic(self, name):
            self.topic = _Topic(log)
            made["topic"] = self.topic
            return self.topic

    client.MofkaDriver = MofkaDriver
    client.AdaptiveBatchSize = "adaptive"
    client.ThreadPool = lambda n: ("pool", n)
    client.Ordering = types.SimpleNamespace(Loose="loose", Strict="strict")

    class Engine:
        def __init__(self, protocol, use_progress_thread=False):
            made["engine"] = (protocol, use_progress_thread)
            self.finalized = False

        def finalize(self):
            self.finalized = True

    margo = types.ModuleType("mochi.margo")
    margo.Engine = Engine
    mochi = types.ModuleType("mochi")
    mochi_mofka = types.ModuleType("mochi.mofka")
    mochi_mofka.client = client
    mochi.mofka, mochi.margo = mochi_mofka, margo
    for name, m in {"mochi": mochi, "mochi.mofka": mochi_mofka, "mochi.mofka.client": client,
                    "mochi.margo": margo}.items():
        monkeypatch.setitem(sys.modules, name, m)
    monkeypatch.setitem(sys.modules, "diaspora_stream", None)    # not installed
    monkeypatch.setitem(sys.modules, "diaspora_stream.api", None)
    t = open_transport("mofka", mcfg(mofka_protocol="ofi+verbs"), JOB)
    assert t.gen == M.GEN_CLIENT
    assert made["engine"] == ("ofi+verbs", True)
    assert made["driver"][0] == "/tmp/mofka.json"
    args, _ = made["topic"].producer_args
    assert args[0] == "flowcept-nodeM" and args[1] == "adaptive" and args[3] == "loose"
    f = make_frame(1, 2)[0]
    t.publish(frame_key(f), f)
    t.close()
    assert any(isinstance(e, tuple) and e[2] == f for e in log)


# -- live: only where Mofka is installed and a service is described ---------------
LIVE_GROUP = os.environ.get("FLOWCEPT_TEST_MOFKA_GROUP_FILE")


@pytest.mark.skipif(not _have_mofka(), reason="Mofka's Python client (diaspora_stream.api or "
                    "mochi.mofka.client) is not installed here; see docs/transports.md")
@pytest.mark.skipif(not LIVE_GROUP, reason="set FLOWCEPT_TEST_MOFKA_GROUP_FILE to a running "
                    "Mofka service's group file (topic from FLOWCEPT_TEST_MOFKA_TOPIC)")
def test_live_mofka_roundtrip(tmp_path):
    topic = os.environ.get("FLOWCEPT_TEST_MOFKA_TOPIC", "flowcept-test")
    proto = os.environ.get("FLOWCEPT_TEST_MOFKA_PROTOCOL", "na+sm")
    cfg = mcfg(mofka_group_file=LIVE_GROUP, mofka_topic=topic, mofka_protocol=proto,
               store_dir=str(tmp_path / "store"))
    t = open_transport("mofka", cfg, JOB)
    frames = [make_frame(s, 10, job_id=int.from_bytes(os.urandom(4), "little"))[0] for s in range(5)]
    for f in frames:
        t.publish(frame_key(f), f)
    t.flush()
    t.close()
    from flowcept.keeper import Keeper
    k = Keeper(cfg, name="live-test")
    k.run(max_idle_s=5)
    from flowcept.store import open_store
    with open_store("lmdb", str(tmp_path / "store"), readonly=True) as st:
        got = {key for key, _ in st.scan()}
    assert {frame_key(f) for f in frames} <= got
