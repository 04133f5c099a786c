"""``flowcept epilog``: what the SLURM epilog runs after a job, on each node.

It finds what the job left on this node (the rings and spill files of ranks that were killed,
or of a leader that died, under ``<shm_dir>/flowcept-<uid>/<job>/``), drains every committed
record into the job's store (:func:`flowcept.node.recovery.recover_job`), and, when configured,
compacts the job's run directory into one HDF5 archive (``flowcept.archive.compact``).

Security model (the epilog starts as root under slurmd):

* All file work is done in a forked child that has dropped privileges to the job's uid/gid
  (:func:`flowcept.ops.safefs.drop_privileges`), so the kernel's own permission checks apply.
  The root parent only reads the child's log lines from a pipe and writes them to the log file
  (created 0600, never through a symlink), and kills the child at the time limit.
* A job run by root (uid 0) is handled as root, for root's own files only: every directory and
  file must then be owned by root.
* Before anything is opened, the directory chain of the ring dir is walked from ``/`` with
  :func:`~flowcept.ops.safefs.check_dir_chain` (no symlinked component, no directory another
  user controls); the two per-user/per-job levels must also be writable by their owner only.
  Every entry of the ring dir is ``lstat``-ed through the directory descriptor: a symlink, a
  non-regular file, or a file owned by another uid is refused and logged, and the ring it
  belongs to is left alone (nothing is read or written through it); the other rings are still
  recovered.  The ring and spill opens in C add ``O_NOFOLLOW`` and an owner check of their own.
* The run directory (where the store and archive are written) is chain-checked the same way
  for the part of it that exists.

The parts live in their own modules: :mod:`flowcept.ops.site` (the site configuration),
:mod:`flowcept.ops.slurmjob` (the job from slurmd's environment, path templates),
:mod:`flowcept.ops.vetting` (the path checks) and :mod:`flowcept.ops.privsep` (the forked
worker and its root parent); this module is the work itself and the command, and keeps every
name it had, so ``flowcept.ops.epilog`` stays the one import for the shell wrapper and tests.

Exit status: 0 when everything was done or there was nothing to do, 1 when something was
refused or failed (logged), 2 for a usage error.  The shell wrapper (slurm/flowcept-epilog.sh)
always exits 0 so that a provenance problem never drains a node.
"""
from __future__ import annotations

import os
import stat
import sys
import time
from typing import Callable, List, Mapping, Optional

from flowcept.osutil import private_dir
# The names below were defined here before the split; they stay importable from here
# (tests, slurm/flowcept-epilog.sh and ops/cli.py use this module).  # noqa: F401
from flowcept.ops.privsep import Log, open_log as _open_log, stamp as _stamp, supervise
from flowcept.ops.site import (CONF_KEYS, DEFAULT_CONF, EpilogSettings, _bool, read_conf,
                               settings_from, settings_from_args)
from flowcept.ops.slurmjob import JobContext, _node_count, expand, job_from_env
from flowcept.ops.vetting import (_RING_ENTRY, check_run_dir as _check_run_dir,
                                  vet_ring_dir as _vet_ring_dir,
                                  vet_spill_paths as _vet_spill_paths)


# --------------------------------------------------------------------------- the work (as the user)


def job_config(ctx: JobContext, settings: EpilogSettings):
    """The flowcept Config the job's recovery uses: the site's settings file (if any) plus the
    epilog's shm/run dir and transport.  The epilog's own environment is slurmd's, not the
    job's, so FLOWCEPT_* variables are not read."""
    from flowcept.config import load_config
    overrides = {"shm_dir": os.path.abspath(expand(settings.shm_dir, ctx)),
                 "run_dir": os.path.abspath(expand(settings.run_dir, ctx)),
                 "job_id": ctx.job}
    if settings.transport:
        overrides["transport"] = settings.transport
    return load_config(settings.settings or None, env={}, **overrides)


def preload(config, settings: EpilogSettings) -> None:
    """Imports, before privileges are dropped, everything the work needs: the job's user may
    not be able to read the Python installation (e.g. under /root)."""
    import importlib
    names = ["flowcept.node.recovery", "flowcept.node.drain", "flowcept.native.ring", "flowcept.native",
             "flowcept.record.job", "flowcept.native.batch", "flowcept.record.layout", "flowcept.record.payload",
             "flowcept.transport", "flowcept.store", "flowcept.node.leader", "flowcept.node.spool",
             "flowcept.osutil", "flowcept.errors", "flowcept.progress", "flowcept.ops.safefs", "flowcept.ops.vetting",
             "flowcept.ops.privsep", "flowcept.ops.site", "flowcept.ops.slurmjob", "traceback", "glob",
             "pwd", "grp", "json", "hashlib", "lmdb", "lmdb._envid", "lmdb._config", "msgpack",
             "flowcept.store.summary", "flowcept.store.quarantine", "numpy", "numpy.ma"]
    if settings.compact:
        names += ["flowcept.archive", "flowcept.archive.compact", "flowcept.archive.hdf5",
                  "flowcept.native.columns", "flowcept.query.tasks", "h5py", "numpy", "zlib",
                  "concurrent.futures", "datetime", "secrets", "numpy.ma", "tempfile", "ctypes",
                  "mmap"]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            pass   # reported where it is needed
    from flowcept import registry
    registry.preload(config)   # the backends resolve without package metadata afterwards


def do_job(ctx: JobContext, settings: EpilogSettings, config, log: Log) -> None:
    """All the file work for one job (runs as the job's user)."""
    from flowcept.ops.safefs import UnsafePathError
    shm_dir, run_dir = config.shm_dir, config.run_dir
    ring_dir = os.path.join(shm_dir, f"flowcept-{ctx.uid}", ctx.job)

    rings = _vet_ring_dir(ring_dir, ctx.uid, log)
    if rings:
        rings = _vet_spill_paths(rings, log)
    if rings:
        try:
            _check_run_dir(os.path.join(run_dir, ctx.job), ctx.uid)
        except (UnsafePathError, OSError) as e:
            log("refused", f"run dir: {e}; rings left in {ring_dir}", failure=True)
            return
        from flowcept.node.recovery import recover_job
        t0 = time.monotonic()
        report = recover_job(ctx.job, config=config, rings=rings)
        log("recover", f"{report.records} record(s) from {report.rings} ring(s) in {ring_dir} "
            f"into {os.path.join(run_dir, ctx.job)} ({config.transport}) "
            f"in {time.monotonic() - t0:.2f} s"
            + (f"; {report.torn} torn record(s) skipped" if report.torn else "")
            + (f"; {len(report.skipped_live)} live ring(s) left" if report.skipped_live else ""))
        for err in report.errors:
            log("error", err, failure=True)
        if os.path.isdir(ring_dir):
            log("kept", f"{ring_dir} not removed (refused, live or failed rings remain)")
        else:
            log("removed", ring_dir)
    elif rings is None and not os.path.lexists(ring_dir):
        log("nothing", f"no rings left in {ring_dir}")
    elif rings == []:
        log("nothing", f"no ring to recover in {ring_dir}")

    if settings.compact:
        compact_job(ctx, settings, config, log)


def compact_job(ctx: JobContext, settings: EpilogSettings, config, log: Log) -> None:
    from flowcept.ops.safefs import UnsafePathError
    run_dir = config.run_dir
    job_dir = os.path.join(run_dir, ctx.job)
    if ctx.nodes > 1:
        # Every node's epilog runs at the same time, each recovering its own node's records:
        # no single node can know when the job's store is complete.
        log("skipped", f"compaction of a {ctx.nodes}-node job is left to `flowcept compact "
            f"{job_dir} -o <file>.h5` after the job (e.g. in an afterany-dependent job)")
        return
    if not os.path.isdir(os.path.join(job_dir, "store")):
        log("nothing", f"no store in {job_dir}: nothing to compact")
        return
    archive_dir = os.path.abspath(expand(settings.archive_dir, ctx)) if settings.archive_dir \
        else run_dir
    out = os.path.join(archive_dir, f"{ctx.job}.h5")
    try:
        _check_run_dir(job_dir, ctx.uid)
        _check_run_dir(archive_dir, ctx.uid)
    except (UnsafePathError, OSError) as e:
        log("refused", f"compact: {e}", failure=True)
        return
    try:
        from flowcept.archive import compact
        if not callable(compact):          # the flowcept.archive.compact submodule
            compact = compact.compact
    except (ImportError, AttributeError) as e:
        log("skipped", f"compaction configured but flowcept.archive is not available ({e})",
            failure=True)
        return
    from flowcept.record import job as jobs
    private_dir(archive_dir)
    partial = os.path.join(archive_dir, f".{ctx.job}.h5.partial-{os.getpid()}")
    t0 = time.monotonic()
    try:
        # the bound from the job's configuration, not from slurmd's environment
        compact(job_dir, partial, job=ctx.job, progress=False,
                memory_bytes=config.compact_memory_bytes)
        st = os.lstat(out) if os.path.lexists(out) else None
        if st is not None and (stat.S_ISLNK(st.st_mode) or st.st_uid != ctx.uid):
            raise UnsafePathError(out, "exists and is a symbolic link or another user's file")
        os.replace(partial, out)
    except Exception as e:
        try:
            os.unlink(partial)
        except OSError:
            pass
        log("error", f"compact {job_dir} -> {out}: {type(e).__name__}: {e}", failure=True)
        return
    log("compact", f"{job_dir} -> {out} ({os.path.getsize(out)} bytes) "
        f"in {time.monotonic() - t0:.2f} s")



# --------------------------------------------------------------------------- the root parent


def run_epilog(settings: EpilogSettings, env: Optional[Mapping[str, str]] = None,
               stderr=None) -> int:
    """Runs the epilog for the job in ``env`` (default os.environ); returns the exit status."""
    env = os.environ if env is None else env
    stderr = sys.stderr if stderr is None else stderr
    logf = None
    lines: List[str] = []

    def write(line: str) -> None:
        text = _stamp(line)
        lines.append(line)
        if logf is not None:
            try:
                logf.write(text + "\n")
            except OSError:
                pass
        try:
            stderr.write(text + "\n")
            stderr.flush()
        except (OSError, ValueError):
            pass

    if settings.log_file:
        try:
            logf = _open_log(settings.log_file)
        except OSError as e:
            write(f"cannot open log file {settings.log_file!r}: {e}; logging to stderr only")
    try:
        try:
            ctx = job_from_env(env)
        except ValueError as e:
            write(f"error: {e}")
            return 2
        if ctx.uid == 0 and not settings.allow_root_jobs:
            write(f"job={ctx.job} uid=0 skipped: jobs of root are not handled "
                  "(FLOWCEPT_EPILOG_ALLOW_ROOT_JOBS=no)")
            return 0
        if os.geteuid() != 0 and ctx.uid != os.geteuid():
            write(f"job={ctx.job} uid={ctx.uid} refused: not root, and the job is not ours "
                  f"(we are uid {os.geteuid()})")
            return 1
        if os.geteuid() == 0 and ctx.uid != 0 and ctx.gid is None:
            write(f"job={ctx.job} uid={ctx.uid} refused: no gid known for the job's user "
                  "(set SLURM_JOB_GID or add the user to the passwd database)")
            return 1
        try:
            config = job_config(ctx, settings)
        except (OSError, ValueError) as e:
            write(f"job={ctx.job} uid={ctx.uid} error: configuration: {e}")
            return 2
        preload(config, settings)
        return _fork_and_wait(ctx, settings, config, write)
    finally:
        if logf is not None:
            logf.close()



def _fork_and_wait(ctx: JobContext, settings: EpilogSettings, config,
                   write: Callable[[str], None]) -> int:
    return supervise(ctx, settings.time_limit, lambda log: do_job(ctx, settings, config, log), write)


# --------------------------------------------------------------------------- CLI


def add_arguments(p) -> None:
    p.add_argument("--conf", default=None,
                   help=f"site configuration file (KEY=value; default $FLOWCEPT_EPILOG_CONF or "
                        f"{DEFAULT_CONF} if it exists)")
    p.add_argument("--shm-dir", default=None, help="where jobs' rings live (default /dev/shm)")
    p.add_argument("--run-dir", default=None,
                   help="run directory template, e.g. %%w/flowcept-runs (%%u user, %%U uid, "
                        "%%j job, %%w job work dir, %%h home, %%n node)")
    p.add_argument("--archive-dir", default=None, help="where <job>.h5 goes (default: run dir)")
    p.add_argument("--compact", default=None, choices=("yes", "no"),
                   help="compact the job's run dir into HDF5 after recovery")
    p.add_argument("--transport", default=None, help="transport to recover into (default embedded)")
    p.add_argument("--time-limit", default=None, type=float, help="seconds for all the work")
    p.add_argument("--log-file", default=None, help="append one line per action here (0600)")
    p.add_argument("--settings", default=None, help="flowcept settings file for other keys")


def main(args) -> int:
    try:
        settings = settings_from_args(args)
    except (OSError, ValueError) as e:
        sys.stderr.write(_stamp(f"error: configuration: {e}") + "\n")
        return 2
    return run_epilog(settings)


__all__ = ["EpilogSettings", "JobContext", "read_conf", "settings_from", "settings_from_args",
           "job_from_env", "expand", "run_epilog", "do_job", "compact_job", "job_config", "preload",
           "add_arguments", "main", "Log", "CONF_KEYS", "DEFAULT_CONF"]
