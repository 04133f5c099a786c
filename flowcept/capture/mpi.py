"""MPI-aware capture: ``from flowcept.mpi import instrument``.

::

    from mpi4py import MPI
    from flowcept.capture.mpi import instrument

    with instrument(MPI.COMM_WORLD, workflow_name="heat") as prov:   # collective
        @prov.task
        def step(i, u): ...

or, for a script, one line at the top: ``instrument()`` (finalized at exit,
before mpi4py finalizes MPI).

What happens: rank 0 makes the job name and workflow id and broadcasts them
(one collective); ``COMM_TYPE_SHARED`` splits ranks by node; every rank
creates its ring in node-local shared memory; the node leader (node rank
``leader_node_rank``) gathers the ring paths of its node (one collective),
drains them (by default in a helper process, so that no rank's interpreter
is taken), packs batches in C and publishes them through the configured
transport.  MPI is used only for these start-up
collectives: records never travel over MPI, and finalization is not
collective (the leader waits, with a timeout, for the rings of its node to
be closed or for their processes to die), so a rank that raises or is
killed cannot hang the others.
"""
from __future__ import annotations

import atexit
import logging
import os
import time
from typing import Any, Optional

from flowcept.capture import session as runtime
from flowcept.capture.task import flowcept_task
from flowcept.config import load_config

log = logging.getLogger("flowcept.mpi")


class Instrumentation:
    """An instrumented MPI run (returned by ``instrument``)."""

    task = staticmethod(flowcept_task)

    def __init__(self, comm, config, workflow_name: str, campaign_id: Optional[str],
                 workflow_id: Optional[int]):
        self.comm = comm
        self.config = config
        self.workflow_name = workflow_name
        self.campaign_id = campaign_id
        self._requested_workflow_id = workflow_id
        self.rank, self.size = (comm.Get_rank(), comm.Get_size()) if comm is not None else (0, 1)
        self.node_comm = None
        self.is_leader = True
        self.session: Optional[runtime.Session] = None
        self.finalized = False
        self._leader_ring: Optional[str] = None

    # -- start (collective) ----------------------------------------------
    def _start(self, entered: int) -> "Instrumentation":
        """``entered``: when this rank called ``instrument()``."""
        from flowcept.record import job as jobs
        from flowcept import registry
        cfg = self.config
        if self.comm is None:
            self.session = runtime.start_local_session(cfg, workflow_id=self._requested_workflow_id)
            self._workflow_doc(entered)
            return self
        # Every rank joins every start-up collective, whatever fails locally:
        # a rank that raised before a collective would hang the others in it.
        # Four small collectives: the ids, the node split, the node's ring
        # paths, and one reduction of (first failed rank, earliest start).
        problem: Optional[BaseException] = None
        if runtime.current() is not None:
            problem = RuntimeError("flowcept: a capture session is already active in this "
                                   "process; call instrument() once, before any decorated "
                                   "task runs")
        ids = None
        if self.rank == 0:
            ids = (cfg.job_id or jobs.new_job_name(),
                   self._requested_workflow_id or runtime.new_workflow_id())
        job_name, workflow_id = self.comm.bcast(ids, root=0)
        from mpi4py import MPI
        self.node_comm = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        node_rank, node_size = self.node_comm.Get_rank(), self.node_comm.Get_size()
        leader = cfg.leader_node_rank % node_size
        self.is_leader = node_rank == leader
        drainer = session = None
        if problem is None:
            try:
                if self.is_leader:
                    job = jobs.job_info(cfg, job_name)
                    drainer = registry.load("leader", cfg.leader)(cfg, job)
                session = runtime.Session(cfg, job_name, rank=self.rank,
                                          workflow_id=workflow_id, drainer=drainer)
            except Exception as e:   # e.g. no room in shm_dir for this rank's ring
                problem = e
        why = None if problem is None else str(problem).removeprefix("flowcept: ")
        # every rank learns the leader's ring path: its end markers are named after it
        gathered = self.node_comm.allgather((session.ring_path if session else None, why))
        paths = [p for p, _ in gathered]
        noted = next((w for _, w in gathered if w), None)   # a failure on this node
        if noted is None and drainer is not None:
            # before the last collective, so that the leader returns with the others
            try:
                for path in paths:
                    drainer.adopt(path)
                drainer.start()
            except Exception as e:
                problem = e
                noted = str(e).removeprefix("flowcept: ")
        doc = self._workflow_fields() if self.rank == 0 else None   # likewise
        import numpy as np
        mine = np.array([self.rank if noted else self.size, entered], dtype=np.int64)
        first = np.empty_like(mine)
        self.comm.Allreduce(mine, first, op=MPI.MIN)
        if first[0] < self.size:
            text = self.comm.bcast(noted if self.rank == first[0] else None, root=int(first[0]))
            _abandon(session, drainer)
            if problem is not None:
                raise problem
            raise runtime.CaptureStartError(
                f"flowcept: capture did not start on every rank, so on none (a rank on the node "
                f"of rank {first[0]}: {text})")
        self._leader_ring = paths[leader]
        runtime.set_current(session)
        self.session = session
        if doc is not None:
            self._workflow_doc(int(first[1]), doc)
        return self

    def _workflow_fields(self) -> dict:
        import importlib
        import socket
        from flowcept.record.job import user_name
        importlib.import_module("flowcept.record.payload")   # the encoder, before the last collective
        doc = {"name": self.workflow_name, "campaign_id": self.campaign_id, "user": user_name(),
               "ranks": self.size, "hostname": socket.gethostname(), "mpi": self.comm is not None}
        return {k: v for k, v in doc.items() if v is not None}

    def _workflow_doc(self, started_at: int, doc: Optional[dict] = None) -> None:
        """``started_at``: when the earliest rank entered ``instrument()``,
        so that no rank's first task seems to start before its workflow."""
        doc = dict(doc or self._workflow_fields())
        doc.update(job=self.session.job.job_name, started_at=started_at)
        self.session.push_workflow(doc)

    # -- properties --------------------------------------------------------
    @property
    def workflow_id(self) -> int:
        return self.session.workflow_id

    @property
    def job_name(self) -> str:
        return self.session.job.job_name

    @property
    def run_dir(self) -> str:
        return self.session.job.run_dir

    # -- finalize (not collective) -------------------------------------------
    def finalize(self, error: Optional[BaseException] = None) -> None:
        if self.finalized or self.session is None:
            return
        self.finalized = True
        s = self.session
        if error is not None:
            s.push_workflow({"error": {"rank": self.rank, "type": type(error).__qualname__,
                                       "message": str(error)[:1000]}})
        if self.rank == 0 and error is None:
            s.push_workflow({"ended_at": time.time_ns()})
        if self.comm is None:
            runtime.end_session()
            return
        drainer = s.drainer
        if not self.is_leader and error is not None and self.size > 1:
            # About to abort: wait (bounded) for the leader to take our records.
            _wait_drained(s, self.config.finalize_timeout_s)
        s.drainer = None
        runtime.end_session()           # closes our ring (marks it ended)
        if drainer is not None:
            self._leader_finish(drainer)
        elif self._leader_ring is not None:
            self._late_rank_drain(s)
        if error is not None and self.size > 1 and self.config.abort_on_error:
            log.error("flowcept: rank %d raised %r; aborting the MPI job (abort_on_error)",
                      self.rank, error)
            self.comm.Abort(1)

    def _leader_finish(self, drainer) -> None:
        """Waits (finalize_timeout_s) for the node's rings to end, draining
        meanwhile, then drains what is left and stops.  When a rank is still
        running at the deadline, the leader says so on the file system:
        ``<its ring>.closing`` before its last drain and ``<its ring>.done``
        once it touches no ring any more; such a late rank then drains its
        own ring (``_late_rank_drain``)."""
        timeout = self.config.finalize_timeout_s
        running = drainer.wait_rings(timeout)
        mark = self._leader_ring if running else None
        if mark:
            _touch(mark + ".closing")   # before the last drain: see _late_rank_drain
        try:
            leftover = drainer.finish(0)
        finally:
            if mark:
                _touch(mark + ".done")
        try:
            os.rmdir(self.session.ring_dir)   # only when empty: other steps may share it
        except OSError:
            pass
        if leftover:
            log.info("flowcept: %d rank(s) of this node still running after %ss; each drains "
                     "its own ring when it ends (else `flowcept recover` or the SLURM epilog "
                     "takes them from %s)", len(leftover), timeout,
                     os.path.dirname(next(iter(leftover))))

    def _late_rank_drain(self, s) -> None:
        """A non-leader rank after its ring closed: if the leader already gave
        up waiting for it, drains its own ring into the store (nothing stranded
        in shared memory after a clean end)."""
        from flowcept import registry
        from flowcept.osutil import process_alive
        lead = self._leader_ring
        if not os.path.exists(lead + ".closing"):
            # The leader had not yet begun its last drain when our ring was
            # already closed: that drain takes every record of ours.
            return
        try:
            leader_pid = int(os.path.basename(lead).split(".")[1])
        except (IndexError, ValueError):
            leader_pid = 0
        deadline = time.monotonic() + max(10.0, float(self.config.finalize_timeout_s))
        while not os.path.exists(lead + ".done") and process_alive(leader_pid):
            if time.monotonic() > deadline:
                log.warning("flowcept: rank %d: the node leader neither drained nor released "
                            "the ring %s; `flowcept recover` or the SLURM epilog takes it",
                            self.rank, s.ring_path)
                return
            time.sleep(0.01)
        if not os.path.exists(s.ring_path):
            return   # the leader drained and removed it
        drainer = registry.load("leader", "thread")(self.config, s.job)   # a short drain of its own ring
        try:
            drainer.adopt(s.ring_path)
            n = drainer.drain_all()
        except Exception as e:   # what stays is for `flowcept recover`
            log.warning("flowcept: rank %d could not drain its ring %s (%s: %s); `flowcept "
                        "recover` or the SLURM epilog takes it", self.rank, s.ring_path,
                        type(e).__name__, e)
            drainer.close()
            return
        drainer.close(unlink=True)
        log.info("flowcept: rank %d ended after its node leader; drained its %d record(s)",
                 self.rank, n)
        import glob
        if not glob.glob(os.path.join(s.ring_dir, "*.ring")):
            for p in (lead + ".closing", lead + ".done"):
                try:
                    os.unlink(p)
                except OSError:
                    pass
            try:
                os.rmdir(s.ring_dir)
            except OSError:
                pass

    def __enter__(self) -> "Instrumentation":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.finalize(exc)
        return False



def _abandon(session, drainer) -> None:
    """Undoes a start that did not complete on every rank."""
    if session is not None:
        session.drainer = None
        try:
            session.close()
        except Exception:
            pass
        for p in (session.ring_path, session.ring_path + ".spill"):
            try:
                os.unlink(p)
            except OSError:
                pass
    if drainer is not None:
        try:
            drainer.close()
        except Exception:
            pass


def _touch(path: str) -> None:
    try:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
    except OSError as e:
        log.warning("flowcept: cannot write %s: %s", path, e)


def _wait_drained(session, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = session.stats()
        if st["tail"] >= st["head"]:
            return
        time.sleep(0.005)


def instrument(comm: Any = None, workflow_name: Optional[str] = None, *,
               campaign_id: Optional[str] = None, workflow_id: Optional[int] = None,
               settings_path: Optional[str] = None, **config_overrides: Any) -> Instrumentation:
    """Starts capture on every rank of ``comm`` (collective; default
    ``MPI.COMM_WORLD`` when mpi4py is importable, else a single process).

    Use it as a context manager, or call it once at the top of a script:
    it is then finalized at interpreter exit, before MPI_Finalize.
    Keyword arguments that are configuration keys override the environment.
    """
    entered = time.time_ns()
    config = load_config(settings_path, **config_overrides)
    if comm is None:
        try:
            from mpi4py import MPI
            comm = MPI.COMM_WORLD
        except ImportError:
            comm = None
    name = workflow_name or os.path.splitext(os.path.basename(
        getattr(__import__("__main__"), "__file__", "") or "workflow"))[0]
    inst = Instrumentation(comm, config, name, campaign_id, workflow_id)
    if not config.enabled:
        inst.finalized = True
        return inst
    inst._start(entered)
    # atexit is LIFO: registered after mpi4py's own handler, so it runs first.
    atexit.register(inst.finalize)
    return inst


__all__ = ["instrument", "Instrumentation", "flowcept_task"]
