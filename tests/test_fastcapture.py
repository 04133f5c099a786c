"""The compiled @flowcept_task wrapper (flowcept._fastcapture): the capture
suite on both paths, payloads byte-identical to the Python path, ids shared
with the Python side, descriptor/attribute behaviour, errors, leaks, fork."""
import collections
import functools
import gc
import inspect
import math
import os
import pickle
import subprocess
import sys
import threading
import tracemalloc

import msgpack
import numpy as np
import pytest

from flowcept import Flowcept, FlowceptTask, flowcept_task, read_tasks
from flowcept.capture import session as runtime
from flowcept.capture import task as capture
from flowcept.query.tasks import read_records

from test_capture import *  # noqa: F401,F403  (the capture suite, run on both paths below)

fast = pytest.importorskip("flowcept._fastcapture")


@pytest.fixture(autouse=True, params=["compiled", "pure"])
def wrapper_kind(request, flowcept_env, monkeypatch):
    """Every test of this module (the imported capture suite included) runs
    with the compiled and with the pure-Python wrapper."""
    if request.param == "pure":
        monkeypatch.setenv("FLOWCEPT_PURE_PYTHON", "1")
    return request.param


def _decorated_kind(f):
    return "compiled" if isinstance(f, fast.Task) else "pure"


def test_the_selected_wrapper_is_used(wrapper_kind):
    @flowcept_task
    def f(x):
        return x

    assert _decorated_kind(f) == wrapper_kind
    assert inspect.iscoroutinefunction(flowcept_task(_async_fn))   # async: always Python


async def _async_fn(x):
    return x


# -- byte-identical payloads ------------------------------------------------------------------

class DictSub(dict):
    pass


class TupleSub(tuple):
    pass


Pair = collections.namedtuple("Pair", "a b")


class Opaque:
    def __repr__(self):
        return "Opaque()"


LOCK = threading.Lock()

BIG = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1,
       -1, -32, -33, -128, -129, -32768, -32769, -2**31, -2**31 - 1, -2**63]
VALUES = [None, True, False, 0.0, -1.5, math.inf, 1e300, "", "a" * 31, "b" * 32, "c" * 255,
          "d" * 256, "e" * 65535, "f" * 65536, "héllo wörld ✓", b"", b"\x00" * 300, b"x" * 70000,
          (), [], {}, (1, "2", [3.0, {"k": None}]), {"a": {"b": {"c": [1, 2, (3,)]}}},
          {1: "int key", None: "none key", b"b": 1}, list(range(20)),
          {f"k{i}": i for i in range(20)}] + BIG
DEFER = [2**64, -2**63 - 1, 10**30, "\ud800", bytearray(b"ab"), {1, 2}, DictSub(a=1),
         TupleSub((1,)), Pair(1, 2), np.int64(3), np.ones(3), object(), 1 + 2j,
         [[[[[[[[[1]]]]]]]]], [1, [2, object()]], {(1, 2): "tuple key"}]


@pytest.mark.parametrize("wrapper_kind", ["compiled"], indirect=True)   # the C encoder itself
def test_c_encoder_is_byte_identical_to_msgpack(wrapper_kind):
    for value in VALUES + [[v] for v in VALUES] + [{"k": v} for v in VALUES]:
        assert fast.encode(value) == msgpack.packb(value, use_bin_type=True, datetime=False), value
    for value in DEFER + [[v] for v in DEFER] + [{"k": v} for v in DEFER]:
        assert fast.encode(value) is None, value


def _functions(kind, tags=None, custom_metadata=None, capture_args=None, **_):
    kw = dict(tags=tags, custom_metadata=custom_metadata, capture_args=capture_args)

    def deco(name, **more):
        return flowcept_task(activity_id=f"{name}-{kind}", **kw, **more)

    @deco("plain")
    def plain(x, y=2):
        return x

    @deco("star")
    def star(a, *args, b=1, **kwargs):
        return {"args": args, "kw": kwargs}

    @deco("kwonly")
    def kwonly(a, *, b):
        return a, b

    @deco("one", output_names=["out"])
    def one(x):
        return x

    @deco("two", output_names=("q", "r"))
    def two(x):
        return x

    @deco("dupnames", output_names=["q", "q"])
    def dupnames(x):
        return x

    @deco("boom")
    def boom(x, y=None):
        raise ValueError(f"bad {x}")

    class M:
        @deco("meth")
        def meth(self, a, b=0):
            return a + b

        @classmethod
        @deco("cmeth")
        def cmeth(cls, a):
            return a

    m = M()
    return [
        (plain, (1,), {}), (plain, (), {"x": 1, "y": 2}), (plain, (1,), {"y": "s"}),
        (plain, (1, 2), {}), (plain, ("héllo",), {}), (plain, (None,), {}),
        (plain, (DictSub(a=1),), {}), (plain, (TupleSub((1, 2)),), {}), (plain, (np.float32(2),), {}),
        (plain, (np.arange(6).reshape(2, 3),), {}), (plain, (2**70,), {}), (plain, (-2**70,), {}),
        (plain, ("\udcff",), {}), (plain, ([[[[[[[[[[1]]]]]]]]]],), {}), (plain, ({1, 2},), {}),
        (plain, (b"x" * 70000,), {}), (plain, ({"k": [1, 2.5, None, True, b"b"]},), {}),
        (plain, (Opaque(),), {}), (plain, (LOCK,), {}),
        (star, (1, 2, 3), {"b": 4, "c": 5}), (star, (1,), {}), (star, (), {"a": 1}),
        (kwonly, (1,), {"b": 2}), (one, (None,), {}), (one, ((1, 2),), {}),
        (two, ((1, 2),), {}), (two, ([1, 2],), {}), (two, ((1, 2, 3),), {}), (two, (Pair(1, 2),), {}),
        (two, (None,), {}), (two, (5,), {}), (two, ({"d": 1},), {}), (dupnames, ((1, 2),), {}),
        (plain, ({"a": 1},), {}), (plain, (DictSub(b=2),), {}),
        (boom, (1,), {}), (boom, (), {"x": 2, "y": [1]}),
        (m.meth, (1,), {"b": 2}), (M.meth, (m, 3), {}), (M.cmeth, (7,), {}),
    ]


def _run_all(kind, **opts):
    for fn, args, kwargs in _functions(kind, **opts):
        try:
            fn(*args, **kwargs)
        except ValueError:
            pass


def _payloads(run_dir):
    r = read_records(run_dir)
    out = collections.defaultdict(list)
    order = np.argsort(r.records["start_ns"], kind="stable")
    for i in order.tolist():
        name, kind = r.activity[i].rsplit("-", 1)
        out[kind].append((name, int(r.records[i]["status"]), bytes(r.payloads[i])))
    return out


@pytest.mark.parametrize("opts", [
    {},
    {"tags": ["t1", "t2"], "custom_metadata": {"v": 1, "nested": {"a": [1, 2]}}},
    {"custom_metadata": {"obj": Opaque(), "arr": np.zeros(2)}},
    {"capture_args": False, "tags": ["only"]},
    {"capture_args": False},
    {"max_payload_bytes": 100},
], ids=["default", "tags-meta", "meta-unserializable", "no-args-tags", "no-args", "small-max"])
@pytest.mark.parametrize("wrapper_kind", ["compiled"], indirect=True)   # runs both paths itself
def test_payloads_identical_on_both_paths(run_dir, monkeypatch, opts, wrapper_kind):
    # the rich descriptions: the Flowcept text holds each object's id, which differs per run
    monkeypatch.setenv("FLOWCEPT_VALUE_DESCRIPTIONS", "rich")
    opts = dict(opts)
    config = {"max_payload_bytes": opts.pop("max_payload_bytes")} if "max_payload_bytes" in opts else {}
    with Flowcept(**config):
        monkeypatch.delenv("FLOWCEPT_PURE_PYTHON", raising=False)
        _run_all("c", **opts)
        monkeypatch.setenv("FLOWCEPT_PURE_PYTHON", "1")
        _run_all("py", **opts)
    got = _payloads(run_dir)
    assert len(got["c"]) == len(_functions("x")) and len(got["c"]) == len(got["py"])
    for c, py in zip(got["c"], got["py"]):
        assert c[0] == py[0] and c[1] == py[1]
        assert c[2] == py[2], (c[0], msgpack.unpackb(c[2], strict_map_key=False),
                               msgpack.unpackb(py[2], strict_map_key=False))


# -- wrapper object ---------------------------------------------------------------------------

@flowcept_task
def module_level(x, y=1):
    """Docstring of module_level."""
    return x + y


def test_functools_attributes_signature_and_pickle(wrapper_kind):
    @flowcept_task(activity_id="renamed")
    def inner(a, b: int = 2) -> int:
        """Doc."""
        return a

    inner.extra_attr = 5
    assert inner.__name__ == "inner" and inner.__doc__ == "Doc."
    assert inner.__qualname__.endswith("<locals>.inner") and inner.__module__ == __name__
    assert inner.__wrapped__.__name__ == "inner" and inner.__flowcept_activity__ == "renamed"
    assert str(inspect.signature(inner)) == "(a, b: int = 2) -> int"
    assert inner.extra_attr == 5 and callable(inner)
    if wrapper_kind == "compiled":
        assert isinstance(module_level, fast.Task)
    assert module_level.__doc__ == "Docstring of module_level."
    assert pickle.loads(pickle.dumps(module_level)) is module_level
    assert module_level(1) == 2


def test_descriptor_binds_like_a_function(run_dir, wrapper_kind):
    class Model:
        scale = 10

        @flowcept_task
        def fit(self, epochs):
            return epochs * self.scale

        @staticmethod
        @flowcept_task
        def static(v):
            return v

        @classmethod
        @flowcept_task
        def make(cls, n):
            return cls.__name__ * n

    m = Model()
    with Flowcept():
        assert m.fit(3) == 30
        bound = m.fit
        assert bound.__self__ is m and bound(epochs=1) == 10
        assert Model.fit(m, 2) == 20
        assert Model.static(4) == 4 and m.static(5) == 5
        assert Model.make(1) == "Model"
    assert Model.__dict__["fit"].__get__(None, Model) is Model.__dict__["fit"]
    used = [(t["activity_id"], t["used"]) for t in read_tasks(run_dir)]
    assert used == [("fit", {"epochs": 3}), ("fit", {"epochs": 1}), ("fit", {"epochs": 2}),
                    ("static", {"v": 4}), ("static", {"v": 5}), ("make", {"n": 1})]


def test_exception_propagates_unchanged(run_dir, wrapper_kind):
    err = RuntimeError("kept")

    @flowcept_task
    def fails(x):
        raise err

    with Flowcept():
        with pytest.raises(RuntimeError) as info:
            fails(1)
        assert info.value is err
        assert info.traceback[-1].name == "fails"
        # nothing leaks into the next call's context
        assert capture.current_task_id.get() == 0
    (t,) = read_tasks(run_dir)
    assert t["status"] == "ERROR" and t["error"] == {"type": "builtins.RuntimeError", "message": "kept"}


def test_ids_shared_between_paths_and_blocks(run_dir, monkeypatch, wrapper_kind):
    @flowcept_task
    def c_leaf(i):
        return i

    monkeypatch.setenv("FLOWCEPT_PURE_PYTHON", "1")

    @flowcept_task
    def py_mid(i):
        with FlowceptTask(activity_id="blk"):
            return c_leaf(i)

    monkeypatch.delenv("FLOWCEPT_PURE_PYTHON")

    @flowcept_task
    def c_top():
        return [py_mid(i) for i in range(50)] + [c_leaf(99)]

    with Flowcept() as fc:
        c_top()
        s = fc.session
        assert s.next_task_id() & ((1 << 40) - 1) == 153
    tasks = read_tasks(run_dir)
    assert len(tasks) == 152 and len({t["task_id"] for t in tasks}) == 152
    by_id = {t["task_id"]: t for t in tasks}
    for t in tasks:
        want_parent = {"c_top": None, "py_mid": "c_top", "blk": "py_mid"}.get(t["activity_id"])
        if t["activity_id"] == "c_leaf":
            want_parent = "c_top" if t["used"]["i"] == 99 else "blk"
        got = by_id[t["parent_task_id"]]["activity_id"] if t["parent_task_id"] else None
        assert got == want_parent, t


def test_thread_index_and_workflow_id_follow_the_session(run_dir, wrapper_kind):
    @flowcept_task
    def f(x):
        return x

    with Flowcept() as fc:
        main_idx = fc.session.thread_index()
        f(1)
        box = []
        th = threading.Thread(target=lambda: (f(2), box.append(fc.session.thread_index())))
        th.start()
        th.join()
        with Flowcept(workflow_id=0x1234):
            f(3)
    tasks = {t["used"]["x"]: t for t in read_tasks(run_dir)}
    assert tasks[1]["thread_id"] == main_idx and tasks[2]["thread_id"] == box[0] != main_idx
    assert tasks[3]["workflow_id"] == f"{0x1234:016x}"


def test_disabled_at_call_time_and_session_ending_inside(run_dir, monkeypatch, wrapper_kind):
    @flowcept_task
    def f(x):
        return x

    @flowcept_task
    def ends(x):
        runtime.end_session()
        return x

    monkeypatch.setenv("FLOWCEPT_ENABLED", "0")
    assert f(1) == 1 and runtime.current() is None
    monkeypatch.delenv("FLOWCEPT_ENABLED")
    assert ends(2) == 2 and runtime.current() is None   # the record is skipped, the call returns
    assert f(3) == 3
    runtime.end_session()
    assert sorted(t["used"]["x"] for t in read_tasks(run_dir)) == [3]


def test_no_leak_over_many_calls(run_dir, wrapper_kind):
    @flowcept_task
    def ok(x, y=2):
        return x

    @flowcept_task
    def slow(x):
        return {1, 2}

    @flowcept_task
    def bad(x):
        raise KeyError(x)

    arg = Opaque()
    n = 20_000 if wrapper_kind == "compiled" else 5_000

    def burst():
        for i in range(n):
            ok(x=i, y=2)
            ok(i)
            slow(arg)
            try:
                bad(arg)
            except KeyError:
                pass

    # a large ring and latency keep the drain thread from publishing (and
    # allocating) while tracemalloc measures this thread's calls
    with Flowcept(ring_bytes=256 << 20, batch_latency_ms=3_600_000):   # ~24 MB used: < a quarter
        burst()
        gc.collect()
        before_ref = sys.getrefcount(arg)
        tracemalloc.start()
        burst()
        gc.collect()
        first, _ = tracemalloc.get_traced_memory()
        burst()
        gc.collect()
        second, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert sys.getrefcount(arg) == before_ref
        assert second - first < 64 * 1024, (first, second)


def test_fork_child_does_not_use_parent_state(run_dir, wrapper_kind):
    @flowcept_task
    def f(x):
        return x

    with Flowcept() as fc:
        f(1)
        parent_state = fc.session._fast
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                ok = fast.get_active() is None and runtime.current() is None
                f(2)
                child = runtime.current()
                ok = ok and child is not None and child._fast is not parent_state
                ok = ok and fast.get_active() is child._fast
                runtime.end_session()
                code = 0 if ok else 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert fast.get_active() is parent_state
        f(3)
    assert sorted(t["used"]["x"] for t in read_tasks(run_dir)) == [1, 2, 3]


def test_python_dev_mode_run(tmp_path, wrapper_kind):
    """A short run under `python -X dev` (debug hooks on the allocators)."""
    script = tmp_path / "dev.py"
    script.write_text(
        "from flowcept import Flowcept, flowcept_task, read_tasks\n"
        "import os\n"
        "@flowcept_task(output_names=['a', 'b'], tags=['t'])\n"
        "def f(x, y=2):\n    return x, {y}\n"
        "@flowcept_task\n"
        "def g(x):\n    raise ValueError(x)\n"
        "with Flowcept():\n"
        "    for i in range(20000):\n"
        "        f(i, y=3)\n"
        "        f(x='s' * (i % 50))\n"
        "        try:\n            g(i)\n        except ValueError:\n            pass\n"
        "print(len(read_tasks(os.environ['FLOWCEPT_RUN_DIR'])))\n")
    out = subprocess.run([sys.executable, "-X", "dev", str(script)], check=True, timeout=300,
                         env=os.environ, capture_output=True, text=True)
    assert out.stdout.strip() == "60000", out.stderr
