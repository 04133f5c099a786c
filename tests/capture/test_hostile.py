"""Capture never changes what the user's function does, on both wrappers
(compiled and pure Python): hostile return values, exceptions, arguments
and names.  The function returns its own result or raises its own exception
object (same traceback), and a record exists for every call."""
import os
import subprocess
import sys
import traceback
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowcept import Flowcept, FlowceptLoop, FlowceptTask, flowcept_task
from flowcept.capture import session as runtime
from flowcept.query.tasks import read_records
from flowcept.record.payload import decode

fast = pytest.importorskip("flowcept._fastcapture")

NAME_IN_PAYLOAD = 16
OVERFLOW = 0xFFFFFFFF


@pytest.fixture(params=["compiled", "pure"])
def kind(request, flowcept_env, monkeypatch):
    if request.param == "pure":
        monkeypatch.setenv("FLOWCEPT_PURE_PYTHON", "1")
    return request.param


def decorate(kind, func, **kw):
    t = flowcept_task(**kw)(func) if kw else flowcept_task(func)
    assert isinstance(t, fast.Task) == (kind == "compiled")
    return t


def records(run_dir):
    """(activity name, status, payload dict) of every task record (the reader
    takes the name of an FC_ACTIVITY_OVERFLOW record from its payload)."""
    r = read_records(run_dir)
    out = []
    for rec, act, pay in zip(r.records, r.activity, r.payloads):
        if int(rec["flags"]) & NAME_IN_PAYLOAD:
            assert int(rec["activity_id"]) == OVERFLOW
        out.append((act, int(rec["status"]), decode(bytes(pay))))
    return out


def user_frames(exc):
    """The traceback of exc without capture's own frames and the caller's."""
    return [(f.filename, f.lineno, f.name) for f in traceback.extract_tb(exc.__traceback__)
            if os.sep + "flowcept" + os.sep not in f.filename][1:]


# -- examples --------------------------------------------------------------------------------

class BadStr(Exception):
    def __str__(self):
        raise RuntimeError("no str for you")


class Hostile:
    def __repr__(self):
        raise ValueError("no repr")

    def __len__(self):
        raise ValueError("no len")


class HostileTuple(tuple):
    def __len__(self):
        raise RuntimeError("no len")


def test_big_dict_with_mixed_keys(kind, run_dir):
    big = {1: "x" * 100, "a": 2, (1, 2): 3, None: 4, 2.5: b"y" * 1000, Hostile(): 5}

    def f():
        return big

    with Flowcept(max_payload_bytes=256):
        assert decorate(kind, f)() is big
    ((act, status, doc),) = records(run_dir)
    assert act == "f" and status == 0 and doc["truncated"] is True
    assert "generated" in doc["keys"]


@pytest.mark.parametrize("exc", [BadStr("x"), ValueError("lone \ud800 surrogate"),
                                 KeyError(Hostile())])
def test_hostile_exceptions_keep_identity_and_traceback(kind, run_dir, exc):
    def f(x):
        raise exc

    g = decorate(kind, f)
    with Flowcept():
        exc.__traceback__ = None
        with pytest.raises(type(exc)) as plain:
            f(1)
        plain_frames = user_frames(plain.value)
        exc.__traceback__ = None
        with pytest.raises(type(exc)) as caught:
            g(1)
    assert caught.value is exc
    assert user_frames(caught.value) == plain_frames
    ((act, status, doc),) = records(run_dir)
    assert status == 1 and doc["error"]["type"].endswith(type(exc).__qualname__)
    assert isinstance(doc["error"]["message"], str)


def test_async_tasks_keep_their_outcome(run_dir):
    import asyncio
    exc = BadStr()
    weird = HostileTuple((1,))

    @flowcept_task(output_names=["a", "b"])
    async def ok(x):
        return weird

    @flowcept_task
    async def bad(x):
        raise exc

    async def main():
        assert await ok(Hostile()) is weird
        with pytest.raises(BadStr) as caught:
            await bad("\ud800")
        assert caught.value is exc

    with Flowcept():
        asyncio.run(main())
    assert sorted(s for _, s, _ in records(run_dir)) == [0, 1]


def test_hostile_results_and_arguments(kind, run_dir):
    weird = HostileTuple((1, 2))

    def f(a, *rest, **kw):
        return weird

    g = decorate(kind, f, output_names=["p", "q"])
    with Flowcept():
        assert g(Hostile(), "\udc80", 2 ** 200, k=Hostile()) is weird
    ((act, status, doc),) = records(run_dir)
    assert status == 0 and act == "f"


@pytest.mark.parametrize("name", ["n" * 100_000, "sur\ud800rogate", "é" * 5000, ""])
def test_hostile_task_names(kind, run_dir, name):
    def f(x):
        return x

    g = decorate(kind, f, activity_id=name)
    with Flowcept():
        assert g(3) == 3
        with FlowceptTask(activity_id=name):
            pass
    recs = records(run_dir)
    assert len(recs) == 2
    for act, status, _ in recs:
        assert len(act.encode()) <= 1024 and status == 0
        if name and "\ud800" not in name:
            assert name.startswith(act)


def test_odd_callables_and_activity_ids(kind, run_dir):
    import functools

    class Callable:
        def __call__(self, x):
            return x + 1

    def add(a, b):
        return a + b

    with Flowcept() as fc:
        assert decorate(kind, functools.partial(add, 1))(2) == 3
        assert decorate(kind, Callable())(1) == 2
        assert decorate(kind, add, activity_id=123)(1, 2) == 3
        with FlowceptTask(activity_id=["not", "a", "name"]):
            pass
        wf = f"{fc.workflow_id:016x}"
    names = sorted(a for a, _, _ in records(run_dir))
    assert names == sorted(["partial", "Callable", "123", "['not', 'a', 'name']"])
    from flowcept import read_workflows
    assert "capture_rank0" not in read_workflows(run_dir)[wf]   # nothing was lost


def test_placeholders_are_counted_and_reported(kind, run_dir):
    def f(x):
        raise BadStr()

    with Flowcept() as fc:
        with pytest.raises(BadStr):
            decorate(kind, f)(1)
        wf = f"{fc.workflow_id:016x}"
    from flowcept import read_workflows
    assert read_workflows(run_dir)[wf]["capture_rank0"]["placeholders"] >= 1


def test_name_table_overflow_keeps_every_record(kind, run_dir):
    n = 200
    with Flowcept(ring_names=16, ring_names_bytes=4096) as fc:
        for i in range(n):
            g = decorate(kind, lambda x: x, activity_id=f"activity-{i:04d}-" + "z" * 40)
            assert g(i) == i
            with FlowceptTask(activity_id=f"block-{i}"):
                pass
        assert fc.session.names_overflowed > 0
    recs = records(run_dir)
    names = [a for a, _, _ in recs]
    assert sorted(names) == sorted([f"activity-{i:04d}-" + "z" * 40 for i in range(n)]
                                   + [f"block-{i}" for i in range(n)])
    assert all(doc.get("used", {}).get("x") == int(a[9:13]) for a, _, doc in recs
               if a.startswith("activity"))


def test_loop_break_stores_last_iteration_finished(run_dir, monkeypatch):
    monkeypatch.setenv("FLOWCEPT_LOOP_TASK", "1")   # the loop's own task too
    with Flowcept():
        loop = FlowceptLoop(range(10), loop_name="train", item_name="epoch")
        for epoch in loop:
            loop.end_iter({"loss": epoch / 10})
            if epoch == 3:
                break
    recs = records(run_dir)
    its = sorted((d["used"]["epoch"], s, d.get("generated")) for a, s, d in recs
                 if a == "train_iteration")
    assert its == [(i, 0, {"loss": i / 10}) for i in range(4)]
    ((_, s, lp),) = [r for r in recs if r[0] == "train"]
    assert s == 0 and lp["generated"] == {"iterations": 4}


def test_loop_with_hostile_names_and_items(run_dir, monkeypatch):
    monkeypatch.setenv("FLOWCEPT_LOOP_TASK", "1")   # the loop's own task too
    class NoLen:
        def __len__(self):
            raise RuntimeError("no len")

        def __iter__(self):
            return iter([Hostile(), "\ud800", 2 ** 100])

    from flowcept.capture.task import FlowceptLoop as Loop   # the capture layer's own loop
    with Flowcept():
        seen = [type(x).__name__ for x in Loop(NoLen(), loop_name=Hostile(),
                                               item_name=["unhashable"])]
    assert seen == ["Hostile", "str", "int"]
    recs = records(run_dir)
    assert len(recs) == 4 and all(s == 0 for _, s, _ in recs)


# -- configuration ------------------------------------------------------------------------

def test_lazy_start_with_wrong_config_runs_uncaptured(kind, monkeypatch, caplog):
    def f(x):
        return x * 2

    g = decorate(kind, f)   # decorated while the configuration is fine
    monkeypatch.setattr(runtime, "_config_failed", None)   # logged once per process
    monkeypatch.setenv("FLOWCEPT_RING_BYTES", "abc")
    monkeypatch.setattr(runtime, "uncaptured", [0])   # so the suite's own exit reports none
    before = runtime.uncaptured[0]
    assert [g(i) for i in range(3)] == [0, 2, 4]
    assert runtime.current() is None and runtime.uncaptured[0] - before == 3
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "ring_bytes" in r.message]
    assert len(errors) == 1
    # decorating with the wrong configuration does not raise either
    assert flowcept_task(f)(5) == 10


def test_explicit_start_with_wrong_config_raises():
    from flowcept.config import ConfigError
    with pytest.raises(ConfigError, match="ring_bytes"):
        Flowcept(ring_bytes="abc").start()
    from flowcept.capture.mpi import instrument
    with pytest.raises(ConfigError, match="ring_bytes"):
        instrument(None, ring_bytes="abc")


def test_keep_env_and_unknown_variables_warn_not_raise(kind, monkeypatch, run_dir):
    monkeypatch.setenv("FLOWCEPT_KEEP_ENV", "yes")
    monkeypatch.setenv("FLOWCEPT_TOTALLY_UNKNOWN", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = decorate(kind, lambda x: x + 1)
        assert g(1) == 2
    runtime.end_session()
    assert len(records(run_dir)) == 1


# -- a full shm_dir ----------------------------------------------------------------------

FULL_SHM = r"""
import logging, resource, signal, sys
logging.basicConfig(level=logging.WARNING, format="LOG %(message)s", stream=sys.stdout)
if sys.argv[1] == "rlimit":
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))
from flowcept import Flowcept, flowcept_task
@flowcept_task
def f(x):
    return x + 1
print("lazy", [f(i) for i in range(3)], flush=True)
try:
    Flowcept().start()
    print("explicit: no error")
except Exception as e:
    print("explicit raised", type(e).__name__, e)
"""


def _tiny_tmpfs(path):
    if os.geteuid() != 0:
        return False
    os.makedirs(path, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", path],
                          capture_output=True).returncode == 0


@pytest.mark.parametrize("how", ["tmpfs", "rlimit"])
def test_full_shm_dir_fails_at_start_naming_shm_dir(tmp_path, how, monkeypatch):
    shm = str(tmp_path / "tiny")
    mounted = False
    if how == "tmpfs":
        mounted = _tiny_tmpfs(shm)
        if not mounted:
            pytest.skip("cannot mount a tmpfs here (not root)")
    else:
        os.makedirs(shm)
    try:
        env = dict(os.environ, FLOWCEPT_SHM_DIR=shm, FLOWCEPT_RING_BYTES=str(1 << 20))
        out = subprocess.run([sys.executable, "-c", FULL_SHM, how], capture_output=True,
                             text=True, timeout=60, env=env)
        text = out.stdout + out.stderr
        assert out.returncode == 0, text
        assert "lazy [1, 2, 3]" in text
        assert "explicit raised CaptureStartError" in text and "shm_dir" in text
        assert text.count("LOG flowcept: capture is off") == 1, text
        assert "3 decorated call(s) ran uncaptured" in text
        assert "Traceback" not in text
    finally:
        if mounted:
            subprocess.run(["umount", shm])


# -- the property: decorated == undecorated ---------------------------------------------

text_any = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF,
                                          blacklist_categories=()), max_size=40)
leaves = (st.none() | st.booleans() | st.integers(min_value=-2 ** 80, max_value=2 ** 80)
          | st.floats(allow_nan=False) | text_any | st.binary(max_size=64)
          | st.builds(Hostile) | st.builds(HostileTuple, st.lists(st.integers(), max_size=3)))
keys = (st.none() | st.integers() | text_any | st.floats(allow_nan=False) | st.builds(Hostile)
        | st.tuples(st.integers(), text_any) | st.frozensets(st.integers(), max_size=2))
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                      | st.tuples(inner, inner)
                      | st.dictionaries(keys, inner, max_size=4), max_leaves=12)
big_values = st.builds(lambda k: {**{i: "v" * 50 for i in range(40)}, **k},
                       st.dictionaries(keys, leaves, max_size=3))


def _exc_classes():
    class Plain(Exception):
        pass

    class NoStr(Exception):
        def __str__(self):
            raise RuntimeError("hostile __str__")

    class NoRepr(Exception):
        def __repr__(self):
            raise RuntimeError("hostile __repr__")

        def __str__(self):
            return "\ud800"

    return [Plain, NoStr, NoRepr, KeyboardInterrupt, SystemExit, GeneratorExit]


EXC = _exc_classes()
outcomes = st.one_of(
    st.tuples(st.just("return"), values | big_values),
    st.tuples(st.just("raise"), st.tuples(st.sampled_from(EXC), text_any)))
names = st.one_of(text_any, st.builds(lambda c, n: c * n, st.sampled_from("xé\ud800✓"),
                                      st.sampled_from([1, 1023, 1025, 5000])))


def test_decorated_behaves_exactly_as_undecorated(flowcept_env, monkeypatch):
    calls = []

    @settings(max_examples=300, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(args=st.lists(values, max_size=3), kwargs=st.dictionaries(
        st.sampled_from(["a", "b", "\ud801", "self"]), values, max_size=2),
        outcome=outcomes, name=names, output_names=st.none() | st.just(["p", "q"]),
        wrapper=st.sampled_from(["compiled", "pure"]))
    def check(args, kwargs, outcome, name, output_names, wrapper):
        what, spec = outcome
        if what == "raise":
            cls, msg = spec
            exc = cls(msg)

        def f(*a, **k):
            if what == "raise":
                raise exc
            return spec

        monkeypatch.setenv("FLOWCEPT_PURE_PYTHON", "1" if wrapper == "pure" else "0")
        monkeypatch.setenv("FLOWCEPT_MAX_PAYLOAD_BYTES", "1024")
        monkeypatch.setenv("FLOWCEPT_RING_NAMES", "16")
        g = flowcept_task(activity_id=name, output_names=output_names)(f)
        assert isinstance(g, fast.Task) == (wrapper == "compiled")
        s = runtime.current() or runtime.ensure_session()
        assert s is not None
        pushed = s.stats()["pushed"]
        if what == "return":
            assert g(*args, **kwargs) is spec
        else:
            try:
                exc.__traceback__ = None
                f(*args, **kwargs)
            except BaseException as e:
                plain = user_frames(e)
            exc.__traceback__ = None
            try:
                g(*args, **kwargs)
            except BaseException as e:
                assert e is exc
                assert user_frames(e) == plain
            else:
                raise AssertionError("the exception was swallowed")
        calls.append(name)
        assert s.stats()["pushed"] == pushed + 1          # a record for the call
        assert s.stats()["dropped"] == 0

    check()
    runtime.end_session()
    # every record is in the store, and every payload decodes
    r = read_records(flowcept_env["run_dir"])
    assert len(r.records) == len(calls)
    for pay in r.payloads:
        assert isinstance(decode(bytes(pay)), dict)
