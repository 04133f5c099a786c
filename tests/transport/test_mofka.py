"""The Mofka transport without a Mofka stack: configuration checks, metadata encoding,
generation detection and refusal, and the push/flush/read/ack contract against a test double
of the one generation that cannot be built here, Mofka 0.6.x (``mochi.mofka.client`` on its
own ``pymofka_client`` binding).  The double's signatures are those of the upstream sources
(mochi-hpc/mofka python/mochi/mofka/client.py and python/py-mofka-client.cpp of the 0.6
series); everything the 0.8.2 / diaspora-stream-api 0.5.2 generation does is tested against
the real library in test_mofka_live.py."""
import importlib
import json
import sys
import time
import types

import pytest

from flowcept.config import ConfigError, load_config
from flowcept.transport import Entry, JobInfo, Source, Transport, TransportUnavailable, open_transport
from flowcept.transport import mofka as M
from support.framegen import frame_key, make_frame

JOB = JobInfo(job_name="j9", job_id=9, node="nodeM", run_dir="/nonexistent")


def mcfg(**kw):
    base = dict(transport="mofka", mofka_group_file="/tmp/mofka.json", mofka_topic="flowcept",
                mofka_protocol="na+sm")
    base.update(kw)
    return load_config(env={}, **base)


def ncfg(**kw):
    """Only the mofka_* options the module reads (independent of the package's Config)."""
    base = dict(mofka_group_file="/tmp/mofka.json", mofka_topic="flowcept", mofka_protocol="",
                mofka_driver="mofka", mofka_create_topic=False, mofka_timeout_s=2.0)
    base.update(kw)
    return types.SimpleNamespace(**base)


def _have_mofka():
    for name in (M.GEN_DIASPORA, M.GEN_CLIENT):
        try:
            importlib.import_module(name)
            return True
        except ImportError:
            continue
    return False


# -- interface ---------------------------------------------------------------------------
def test_module_exports_backend_source_and_options():
    assert M.BACKEND is M.MofkaTransport and M.SOURCE is M.MofkaSource
    assert issubclass(M.MofkaTransport, Transport) and issubclass(M.MofkaSource, Source)
    assert issubclass(M.MofkaEntry, Entry)
    assert M.MofkaTransport.name == "mofka" and M.MofkaTransport.spool_fallback is True
    assert M.MofkaSource.name == "mofka"
    names = [o[0] for o in M.OPTIONS]
    assert names[:3] == ["group_file", "topic", "protocol"]
    for name, typ, default, doc in M.OPTIONS:
        assert isinstance(default, typ) and doc and "\n" not in doc
    assert dict((o[0], o[2]) for o in M.OPTIONS)["topic"] == "flowcept"


# -- configuration -----------------------------------------------------------------------
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
    # the simple backend needs none
    M.check_config(ncfg(mofka_group_file="", mofka_driver="simple:libdiaspora-simple-backend.so"))


@pytest.mark.parametrize("topic", ["flowcept-x", "1abc", "", "a b", "flowcept.x", "é"])
def test_bad_topic_names_refused_with_the_rule(topic):
    with pytest.raises(ConfigError) as ei:
        M.check_config(ncfg(mofka_topic=topic))
    msg = str(ei.value)
    assert "^[a-zA-Z_][a-zA-Z0-9_]*$" in msg and "\n" not in msg and "mofka_topic" in msg


@pytest.mark.parametrize("topic", ["flowcept", "_x", "Flowcept_job42", "a1"])
def test_good_topic_names(topic):
    M.check_config(ncfg(mofka_topic=topic))


def test_group_protocol(tmp_path):
    g = tmp_path / "mofka.json"
    g.write_text(json.dumps({"members": [{"address": "na+sm://1234-0", "rank": 0}]}))
    assert M.group_protocol(str(g)) == "na+sm"
    g.write_text(json.dumps({"members": [{"address": "ofi+tcp;ofi_rxm://10.0.0.1:5000"}]}))
    assert M.group_protocol(str(g)) == "ofi+tcp;ofi_rxm"
    g.write_text("not json")
    assert M.group_protocol(str(g)) is None
    assert M.group_protocol(str(tmp_path / "none.json")) is None


def test_metadata_roundtrip_is_small_json():
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


# -- generations ---------------------------------------------------------------------------
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
    msg = str(ei.value)
    assert "diaspora_stream.api" in msg and "mochi.mofka.client" in msg
    assert "transport=redis" in msg and M.SUPPORTED in msg


@pytest.mark.skipif(_have_mofka(), reason="Mofka is installed in this process")
def test_absent_mofka_gives_a_clear_error():
    with pytest.raises(TransportUnavailable, match="needs Mofka's Python client"):
        open_transport("mofka", mcfg(), JOB) if "mofka" in _transport_names() else \
            M.MofkaTransport(mcfg(), JOB)


def _transport_names():
    from flowcept.transport import transport_names
    try:
        return transport_names()
    except Exception:
        return []


def _pybind_method(doc):
    """A stand-in for a pybind11 method: the signature lives in __doc__."""
    def f(*a, **k):
        raise AssertionError("not called")
    f.__doc__ = doc
    return f


def _diaspora_03():
    """diaspora-stream-api 0.3 (with Mofka 0.7.0): Driver.new, wait() without timeout."""
    mod = types.ModuleType("diaspora_stream.api")

    class FutureEvent:
        wait = _pybind_method("wait(self: pydiaspora_stream_api.FutureEvent) -> object")

    class Driver:
        @staticmethod
        def new(backend, options=None):
            raise AssertionError("not called")

    mod.FutureEvent, mod.Driver = FutureEvent, Driver
    return mod


def _mofka_05():
    """mochi.mofka.client of Mofka <= 0.5: MofkaDriver(group_file, arg=None), no
    FullDataSelector."""
    mod = types.ModuleType("mochi.mofka.client")

    class FutureEvent:
        wait = _pybind_method("wait(self: pymofka_client.FutureEvent) -> pymofka_client.Event")

    class MofkaDriver:
        def __init__(self, group_file, arg=None):
            raise AssertionError("not called")

    mod.FutureEvent, mod.MofkaDriver = FutureEvent, MofkaDriver
    return mod


@pytest.mark.parametrize("gen, make, what", [
    (M.GEN_DIASPORA, _diaspora_03, "diaspora-stream-api <= 0.3"),
    (M.GEN_CLIENT, _mofka_05, "Mofka <= 0.5"),
])
def test_unsupported_generations_refused_in_one_line(gen, make, what):
    with pytest.raises(ConfigError) as ei:
        M.client_api(gen, make())
    msg = str(ei.value)
    assert what in msg and M.SUPPORTED in msg and "\n" not in msg


def test_unsupported_client_refused_at_start(monkeypatch):
    mod = _diaspora_03()
    pkg = types.ModuleType("diaspora_stream")
    pkg.api = mod
    monkeypatch.setitem(sys.modules, "diaspora_stream", pkg)
    monkeypatch.setitem(sys.modules, "diaspora_stream.api", mod)
    with pytest.raises(ConfigError, match="unsupported Mofka client"):
        M.MofkaTransport(ncfg(), JOB)
    with pytest.raises(ConfigError, match="unsupported Mofka client"):
        M.MofkaSource(ncfg(), "keeper_1")


# -- a double of the Mofka 0.6.x binding (pymofka_client), upstream signatures ------------
class Mofka06:
    """The state behind one double of ``mochi.mofka.client`` 0.6.x: partitions of events as a
    server would hold them, cursors per consumer name, and a log of calls."""

    def __init__(self, partitions=1, complete_after=0):
        self.parts = [[] for _ in range(partitions)]   # (metadata dict, data bytes)
        self.cursor = {}                               # (consumer, partition) -> next id
        self.calls = []
        self.complete_after = complete_after           # polls before a future completes
        self.stuck_pushes = False
        self.module = self._module()

    def _module(self):
        st = self
        mod = types.ModuleType("mochi.mofka.client")
        mod.AdaptiveBatchSize = 18446744073709551615
        mod.Ordering = types.SimpleNamespace(Strict="Strict", Loose="Loose")
        mod.ClientException = RuntimeError

        def select_full(metadata, descriptor):
            return descriptor

        mod.FullDataSelector = select_full
        mod.ByteArrayAllocator = lambda metadata, descriptor: [bytearray(descriptor.size)]

        class FutureUint:              # .def("wait", ...) without timeout; completed: property
            def __init__(self, value, stuck=False):
                self._value, self._stuck, self._polls = value, stuck, 0

            def wait(self):
                assert self.completed, "wait() on an incomplete future blocks forever"
                return self._value

            @property
            def completed(self):
                self._polls += 1
                return not self._stuck and self._polls > st.complete_after

        class Event:
            def __init__(self, metadata, data, event_id, partition, consumer, index):
                self._metadata, self._data, self._id = metadata, data, event_id
                self._partition, self._consumer, self._index = partition, consumer, index

            @property
            def metadata(self):
                return self._metadata

            @property
            def data(self):
                assert self._id is not None, "data of the no-more-events event"
                return [memoryview(self._data)]

            @property
            def event_id(self):
                return self._id

            @property
            def partition(self):
                return self._partition

            def acknowledge(self):
                st.calls.append(("ack", self._consumer, self._index, self._id))
                st.cursor[(self._consumer, self._index)] = self._id + 1

        class FutureEvent:             # wait() without timeout; completed(): a method
            def __init__(self, consumer):
                self._consumer, self._event, self._polls = consumer, None, 0

            def _try(self):
                if self._event is None:
                    self._event = self._consumer._next()
                return self._event

            def completed(self):
                self._polls += 1
                return self._polls > st.complete_after and self._try() is not None

            def wait(self):
                assert self._try() is not None, "wait() with no event blocks forever"
                return self._event

        class Producer:
            def __init__(self, name):
                self.name = name

            def push(self, metadata, data=None, *, partition=None):
                assert isinstance(metadata, (dict, str))
                buf = bytes(memoryview(data))         # the binding reads the buffer now
                i = len(st.calls) % len(st.parts) if partition is None else partition
                st.parts[i].append((metadata, buf))
                st.calls.append(("push", i))
                return FutureUint(len(st.parts[i]) - 1, stuck=st.stuck_pushes)

            def flush(self):
                st.calls.append(("flush",))

        class Consumer:
            def __init__(self, name):
                self.name = name
                self.pos = {i: st.cursor.get((name, i), 0) for i in range(len(st.parts))}

            def _next(self):
                for i, events in enumerate(st.parts):
                    if self.pos[i] < len(events):
                        meta, data = events[self.pos[i]]
                        ev = Event(meta, data, self.pos[i], {"uuid": f"p{i}"}, self.name, i)
                        self.pos[i] += 1
                        return ev
                return None

            def pull(self):
                return FutureEvent(self)

        class TopicHandle:
            def __init__(self, name):
                self.name = name

            def producer(self, name="", *, batch_size=mod.AdaptiveBatchSize, max_num_batches=2,
                         ordering=mod.Ordering.Strict, thread_pool=None, options=None):
                st.calls.append(("producer", name, ordering))
                return Producer(name)

            def consumer(self, name, *, batch_size=mod.AdaptiveBatchSize, max_num_batches=2,
                         thread_pool=None, targets=None, options=None):
                st.calls.append(("consumer", name))
                return Consumer(name)

        class MofkaDriver:
            def __init__(self, group_file, arg=None, use_progress_thread=None):
                st.calls.append(("driver", group_file, arg, use_progress_thread))

            def open_topic(self, name):
                return TopicHandle(name)

            def create_topic(self, name, *, validator=None, selector=None, serializer=None):
                st.calls.append(("create_topic", name))

            def add_default_partition(self, topic_name, server_rank, metadata_provider="",
                                      data_provider="", partition_config=None, pool_name=""):
                st.calls.append(("add_default_partition", topic_name, server_rank))

        mod.FutureUint, mod.FutureEvent, mod.Event = FutureUint, FutureEvent, Event
        mod.MofkaDriver = MofkaDriver
        return mod


@pytest.fixture
def m06(monkeypatch):
    st = Mofka06(partitions=2)
    for name in ("diaspora_stream", "diaspora_stream.api"):
        monkeypatch.setitem(sys.modules, name, None)          # not installed
    mochi = types.ModuleType("mochi")
    pkg = types.ModuleType("mochi.mofka")
    pkg.client = st.module
    mochi.mofka = pkg
    for name, m in {"mochi": mochi, "mochi.mofka": pkg, "mochi.mofka.client": st.module}.items():
        monkeypatch.setitem(sys.modules, name, m)
    return st


def test_06_accepted_and_driver_owns_its_engine(m06):
    t = M.MofkaTransport(ncfg(mofka_create_topic=True), JOB)
    assert t.gen == M.GEN_CLIENT and t.api == "pymofka"
    driver = [c for c in m06.calls if c[0] == "driver"][0]
    assert driver == ("driver", "/tmp/mofka.json", None, True)   # no margo engine of ours
    assert ("create_topic", "flowcept") in m06.calls
    assert ("add_default_partition", "flowcept", 0) in m06.calls
    assert ("producer", "flowcept_nodeM", "Loose") in m06.calls
    t.close()
    assert not M._DRIVERS


def test_06_push_copies_frames_and_flush_confirms_each(m06):
    m06.complete_after = 2            # futures complete after a few polls
    t = M.MofkaTransport(ncfg(), JOB)
    frames = [make_frame(s, 4)[0] for s in range(4)]
    buf = bytearray(max(map(len, frames)))
    for f in frames:
        buf[:len(f)] = f                                   # the caller reuses its buffer ...
        t.publish(frame_key(f), memoryview(buf)[:len(f)])
    buf[:] = b"\0" * len(buf)                              # ... and scribbles on it
    assert [d for _, d in t._pending] == frames
    t.flush()
    stored = [d for part in m06.parts for _, d in part]
    assert sorted(stored) == sorted(frames)
    assert t._pending == [] and t.batches == 4 and ("flush",) in m06.calls
    t.close()


def test_06_flush_not_confirmed_raises_and_hands_frames_back(m06):
    m06.stuck_pushes = True
    t = M.MofkaTransport(ncfg(mofka_timeout_s=0.3), JOB)
    f = make_frame(1, 2)[0]
    t.publish(frame_key(f), f)
    t0 = time.monotonic()
    with pytest.raises(TransportUnavailable, match="did not confirm"):
        t.flush()
    assert time.monotonic() - t0 < 3
    assert t.take_unflushed() == [(frame_key(f), f)]
    t.close()


def _publish(n):
    t = M.MofkaTransport(ncfg(), JOB)
    frames = [make_frame(s, 2)[0] for s in range(n)]
    for f in frames:
        t.publish(frame_key(f), f)
    t.flush()
    t.close()
    return frames


def test_06_read_honours_block_ms_and_count(m06):
    src = M.MofkaSource(ncfg(), "keeper_1")
    t0 = time.monotonic()
    assert src.read(16, 150) == []                          # nothing: returns after ~150 ms
    assert 0.1 <= time.monotonic() - t0 < 2
    t0 = time.monotonic()
    assert src.read(16, None) == []                         # None: no wait
    assert time.monotonic() - t0 < 0.1
    frames = _publish(10)
    got = src.read(4, 1000)
    assert len(got) == 4
    got += src.read(16, 1000)
    assert sorted(e.frame for e in got) == sorted(frames)
    assert {e.key for e in got} == {frame_key(f) for f in frames}
    assert all(e.routing()["job"] == "j9" and e.routing()["partition"] for e in got)
    src.close()


def test_06_ack_never_passes_an_uncommitted_event(m06):
    frames = _publish(12)                                   # 6 per partition
    src = M.MofkaSource(ncfg(), "keeper_1")
    got = []
    while len(got) < 12:
        batch = src.read(16, 500)
        assert batch
        got += batch
    by_part = {}
    for e in got:
        by_part.setdefault(e.partition, []).append(e)
    p0, p1 = sorted(by_part)
    a, b = by_part[p0], by_part[p1]
    # commit a[0], a[1], a[3] (a[2] not committed) and b[1] only (b[0] not committed)
    src.ack([a[0], a[1], a[3], b[1]])
    acks = [c for c in m06.calls if c[0] == "ack"]
    assert acks == [("ack", "keeper_1", a[1].event._index, a[1].id)]    # a[1], not a[3]
    assert src.info()["held"] == 12 - 2
    src.ack([a[2]])                                         # the hole fills: up to a[3]
    assert m06.calls[-1] == ("ack", "keeper_1", a[3].event._index, a[3].id)
    src.ack([b[0]])                                         # partition 1: up to b[1]
    assert m06.calls[-1] == ("ack", "keeper_1", b[1].event._index, b[1].id)
    src.close()
    # a keeper restarted under the same name gets exactly the unacknowledged events
    again = M.MofkaSource(ncfg(), "keeper_1")
    rest = []
    for _ in range(5):
        rest += again.read(16, 100)
    assert sorted(e.frame for e in rest) == sorted(e.frame for e in a[4:] + b[2:])
    again.close()
    fresh = M.MofkaSource(ncfg(), "keeper_2")               # a new name starts at 0
    allof = []
    for _ in range(5):
        allof += fresh.read(16, 100)
    assert len(allof) == 12
    fresh.close()


def test_06_redeliver_returns_uncommitted_entries(m06):
    _publish(3)
    src = M.MofkaSource(ncfg(), "keeper_1")
    got = []
    for _ in range(3):
        got += src.read(16, 300)
    assert len(got) == 3
    src.redeliver(got)
    again = src.read(16, 0)
    assert [e.seq for e in again] == sorted(e.seq for e in got)
    src.ack(again)
    assert src.info()["held"] == 0
    assert src.read(16, None) == []
    src.close()


def test_source_needs_a_consumer_name(m06):
    with pytest.raises(ConfigError, match="stable consumer name"):
        M.MofkaSource(ncfg(), "")
