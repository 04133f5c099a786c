"""A process's capture session: its ring, ids, and (when it leads) the drain.

There is at most one active session per process (``current()``).  It is
started explicitly by ``Flowcept(...)`` or ``flowcept.mpi.instrument(...)``,
or lazily by the first decorated call, and ended at exit.  After fork() the
child drops the inherited session and starts its own when it first captures.
"""
from __future__ import annotations

import atexit
import errno
import itertools
import logging
import os
import threading
from typing import Optional

from flowcept.config import Config, load_config
from flowcept.osutil import private_dir
from flowcept.record.layout import FLAG_PAYLOAD_MSGPACK, FLAG_WORKFLOW, NODE_PREFIX, STATUS_FINISHED

log = logging.getLogger("flowcept")

_session: Optional["Session"] = None
_session_lock = threading.RLock()

try:  # the compiled @flowcept_task wrapper; ids and thread indexes live in its State
    from flowcept import _fastcapture as fastcapture
except ImportError:  # pragma: no cover - pure-Python install
    fastcapture = None


def new_workflow_id() -> int:
    return int.from_bytes(os.urandom(8), "little") or 1


class Session:
    """Capture state of one process.

    rank/size/origin: ids of this process in the job; workflow_id: the
    current workflow; leader: a Drainer when this process drains rings.
    """

    _fast = None   # its flowcept._fastcapture.State, when the extension is there
    # () -> dict: the telemetry snapshot tasks record when they capture telemetry
    # (set by whoever starts the workflow; None: no telemetry fields)
    telemetry = None

    def __init__(self, config: Config, job_name: str, *, rank: int = 0, origin: Optional[int] = None,
                 workflow_id: Optional[int] = None, drainer=None, ring_dir: Optional[str] = None):
        from flowcept.record import job as jobs
        self.config = config
        self.job = jobs.job_info(config, job_name)
        self.rank = rank
        self.origin = (rank if origin is None else origin) & 0xFFFFFF
        self.origin_bits = self.origin << 40
        self.workflow_id = workflow_id or new_workflow_id()
        self.counter = itertools.count(1)
        self.ring_dir = private_dir(ring_dir or jobs.ring_dir(config, job_name))
        self.ring_path = os.path.join(self.ring_dir, f"{rank:06d}.{os.getpid()}.ring")
        self.ring = _create_ring(self.ring_path, config, self.job.job_id, self.workflow_id, rank)
        self.handle = self.ring.handle
        self.ring.intern(NODE_PREFIX + self.job.node)
        self.activity_ids = {}
        self.names_overflowed = 0
        self._tls = threading.local()
        self._thread_counter = itertools.count()
        self.drainer = drainer
        self.pid = os.getpid()
        self.closed = False
        if drainer is not None:
            drainer.adopt(self.ring_path)
        from flowcept.record import payload
        payload.configure(config.numpy_mode, config.max_payload_bytes, config.numpy_stats_max,
                          config.value_descriptions)
        self._fast = _fast_state(self)
        if self._fast is not None:   # its batches say which clock timed the records
            from flowcept.native import lib
            lib.fc_ring_note_clock(self.handle, fastcapture.clock_flags())
        self._placeholders0 = _placeholders()
        self._failures0 = capture_failures[0]

    @property
    def workflow_id(self) -> int:
        return self._workflow_id

    @workflow_id.setter
    def workflow_id(self, value: int) -> None:
        self._workflow_id = value
        fast = self.__dict__.get("_fast")
        if fast is not None:
            fast.workflow_id = value

    # -- ids -----------------------------------------------------------
    def next_task_id(self) -> int:
        if self._fast is not None:
            return self._fast.next_id()
        return self.origin_bits | next(self.counter)

    def thread_index(self) -> int:
        if self._fast is not None:
            return self._fast.thread_index()
        idx = getattr(self._tls, "idx", None)
        if idx is None:
            idx = self._tls.idx = next(self._thread_counter)
        return idx

    def activity_id(self, name: str) -> int:
        """The ring's id of an activity name, or ACTIVITY_OVERFLOW when the
        string table is full (push then puts the name in the payload)."""
        aid = self.activity_ids.get(name)
        if aid is None:
            aid = self.ring.intern(name)
            if aid < 0:   # -ENOSPC: the table is full, and stays so
                aid = ACTIVITY_OVERFLOW
                self.names_overflowed += 1
                if self.names_overflowed == 1:
                    log.warning("flowcept: the ring's table of activity names is full (%d names, "
                                "%d bytes); further names are recorded in each payload: raise "
                                "ring_names / ring_names_bytes", self.config.ring_names,
                                self.config.ring_names_bytes)
            self.activity_ids[name] = aid
        return aid

    # -- pushes --------------------------------------------------------
    def push(self, task_id: int, parent_id: int, start_ns: int, end_ns: int, activity: str,
             status: int, payload: bytes, flags: int = FLAG_PAYLOAD_MSGPACK,
             workflow_id: Optional[int] = None) -> int:
        from flowcept.native import lib
        if self.handle is None:   # the session ended while the task ran: like the C wrapper, skip
            return -errno.EPIPE
        if type(activity) is not str:   # FlowceptTask(123): named by its text
            from flowcept.capture.task import _text
            activity = _text(activity)
        aid = self.activity_id(activity)
        if aid == ACTIVITY_OVERFLOW:
            from flowcept.native.ring import name_prefix
            payload = name_prefix(activity) + payload
            flags |= lib.FC_FLAG_NAME_IN_PAYLOAD
        return lib.fc_ring_push_task(self.handle, task_id, parent_id,
                                     workflow_id or self.workflow_id, start_ns, end_ns, self.rank, self.thread_index(), aid, status, flags,
                                     payload, len(payload))

    def push_workflow(self, doc: dict, workflow_id: Optional[int] = None) -> None:
        """Records a workflow description (merged by workflow id in the store)."""
        import time
        from flowcept.record import payload
        wf = workflow_id or self.workflow_id
        now = time.time_ns()
        data = payload.encode(doc)
        self.push(0, 0, now, now, "workflow", STATUS_FINISHED, data,
                  FLAG_WORKFLOW | FLAG_PAYLOAD_MSGPACK, workflow_id=wf)

    def stats(self) -> dict:
        return self.ring.stats()

    # -- end -----------------------------------------------------------
    def close(self) -> None:
        """Closes the ring (marking it cleanly ended); a leader then drains
        everything, flushes and removes the drained ring files."""
        if self.closed:
            return
        st = self.ring.stats()
        if (st["dropped"] or st["spilled"]) and self.drainer is not None:
            self.drainer.drain_once(max_batches=1 << 30)   # room for the report below
        if st["dropped"] or st["spilled"]:
            # never silent: the counts go into the store with the workflow, and to the log
            self.push_workflow({f"ring_rank{self.rank}": {"dropped": st["dropped"],
                                                           "spilled": st["spilled"],
                                                           "policy": self.config.full_policy}})
            if st["dropped"]:
                log.warning("flowcept: rank %d dropped %d record(s): the ring was full under the "
                            "%r policy; raise ring_bytes or use full_policy='spill'", self.rank,
                            st["dropped"], self.config.full_policy)
        lost = {"placeholders": _placeholders() - self._placeholders0,
                "unrecorded": capture_failures[0] - self._failures0,
                "names_in_payload": self.names_overflowed}
        if any(lost.values()):
            # what capture could not record is counted in the store, never silent
            self.push_workflow({f"capture_rank{self.rank}": lost})
            log.warning("flowcept: rank %d: %d payload(s) replaced by a placeholder, %d task(s) "
                        "not recorded, %d activity name(s) beyond the name table", self.rank,
                        lost["placeholders"], lost["unrecorded"], lost["names_in_payload"])
        self.closed = True
        if self._fast is not None:
            self._fast.invalidate()   # C wrappers stop pushing before the ring goes
        self.ring.close()
        self.handle = None
        if self.drainer is not None:
            self.drainer.stop()
            self.drainer.close(unlink=True)
            try:
                os.rmdir(self.ring_dir)   # only when empty
            except OSError:
                pass


def _placeholders() -> int:
    """Payloads replaced by a placeholder so far (Python and compiled encoders)."""
    from flowcept.record import payload
    n = payload.placeholders[0]
    if fastcapture is not None and hasattr(fastcapture, "placeholders"):
        n += fastcapture.placeholders()
    return n


ACTIVITY_OVERFLOW = 0xFFFFFFFF   # FC_ACTIVITY_OVERFLOW: the name is in the payload


class CaptureStartError(RuntimeError):
    """A session could not start (e.g. no room for its ring in shm_dir)."""


def _create_ring(path: str, config: Config, job_id: int, workflow_id: int, rank: int):
    from flowcept.native.ring import Ring, RingError
    try:
        return Ring.create(path, config, job_id, workflow_id, rank)
    except RingError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise CaptureStartError(
                f"flowcept: no room for a {config.ring_bytes}-byte ring in shm_dir "
                f"{config.shm_dir!r} ({os.strerror(e.errno)}): free space there, point shm_dir "
                f"(FLOWCEPT_SHM_DIR) at a node-local directory with room, or lower "
                f"ring_bytes") from None
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise CaptureStartError(
                f"flowcept: cannot create the ring {path!r} ({os.strerror(e.errno)}): point "
                f"shm_dir (FLOWCEPT_SHM_DIR) at a writable node-local directory") from None
        raise


# failures inside capture that were kept from the user's code (reported at exit)
capture_failures = [0]
_failure_logged = [False]


def capture_failed(exc: BaseException) -> None:
    """Counts (and logs once) an error of capture itself; never raises."""
    capture_failures[0] += 1
    if not _failure_logged[0]:
        _failure_logged[0] = True
        try:
            log.error("flowcept: a task could not be recorded (%s: %s); the application goes on, "
                      "failures are counted", type(exc).__name__, exc)
        except Exception:
            pass


def _fast_state(session: Session):
    """The session's State for flowcept._fastcapture (None without it)."""
    if fastcapture is None:
        return None
    from flowcept.native import ffi, lib
    push = int(ffi.cast("uintptr_t", ffi.addressof(lib, "fc_ring_push_task")))
    return fastcapture.State(push, int(ffi.cast("uintptr_t", session.handle)),
                              session.origin_bits, session.workflow_id, session.rank,
                              bool(session.config.capture_args),
                              session.config.max_payload_bytes, session.activity_id,
                              numpy_mode=("flowcept" if session.config.value_descriptions
                                          == "flowcept" else session.config.numpy_mode),
                              numpy_stats_max=session.config.numpy_stats_max)


def _set_fast_active(session: Optional[Session]) -> None:
    if fastcapture is not None:
        fastcapture.set_active(getattr(session, "_fast", None))


def current() -> Optional[Session]:
    return _session


def set_current(session: Optional[Session]) -> None:
    global _session
    with _session_lock:
        _session = session
        _set_fast_active(session)


def start_local_session(config: Optional[Config] = None, workflow_id: Optional[int] = None) -> Session:
    """A session for a process that is its own leader (no MPI)."""
    from flowcept.record import job as jobs
    from flowcept import registry
    config = config or load_config()
    with _session_lock:
        if _session is not None and not _session.closed:
            return _session
        job_name = config.job_id or jobs.new_job_name()
        job = jobs.job_info(config, job_name)
        drainer = registry.load("leader", config.leader)(config, job)
        try:
            session = Session(config, job_name, workflow_id=workflow_id, drainer=drainer)
        except BaseException:
            drainer.close()
            raise
        drainer.start()
        set_current(session)
        return session


_config_failed = None   # the environment snapshot whose configuration was wrong


def ensure_session() -> Optional[Session]:
    """The active session, started lazily; None when capture is disabled or
    the configuration is wrong (then one error is logged and the
    application runs uncaptured: a lazy start never raises into user code)."""
    global _config_failed
    s = _session
    if s is not None:
        return s
    from flowcept.config import ConfigError, process_config
    try:
        config = process_config()
    except ConfigError as e:
        if _config_failed != str(e):
            _config_failed = str(e)
            log.error("flowcept: capture is off for this process: %s", e)
        uncaptured[0] += 1
        return None
    if not config.enabled:
        return None
    try:
        return start_local_session(config)
    except Exception as e:   # e.g. a full shm_dir or a transport that is down
        if _config_failed != str(e):
            _config_failed = str(e)
            what = str(e).removeprefix("flowcept: ")
            if not isinstance(e, CaptureStartError):
                what = f"{type(e).__name__}: {what}"
            log.error("flowcept: capture is off for this process: %s", what)
        uncaptured[0] += 1
        return None


# calls that ran uncaptured because capture could not start (reported at exit)
uncaptured = [0]


def end_session() -> None:
    """Ends the active session (drains and flushes when it leads)."""
    global _session
    with _session_lock:
        s, _session = _session, None
        _set_fast_active(None)
    if s is not None:
        s.close()


def _after_fork_in_child() -> None:
    # The child shares the parent's ring mapping but not its counters:
    # forget it; the child's first capture starts a session of its own.
    global _session
    _session = None
    _set_fast_active(None)


def _report_uncaptured() -> None:
    if uncaptured[0]:
        log.warning("flowcept: %d decorated call(s) ran uncaptured in this process because "
                    "capture could not start (see the error above)", uncaptured[0])


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_report_uncaptured)
atexit.register(end_session)
