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

Exit status: 0 when everything was done or there was nothing to do, 1 when something was
refused or failed (logged), 2 for a usage error.  The shell wrapper (slurm/flowcept-epilog.sh)
always exits 0 so that a provenance problem never drains a node.
"""
from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import stat
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional

from flowcept.osutil import private_dir

DEFAULT_CONF = "/etc/flowcept/epilog.conf"

# Keys of the site configuration file (shell syntax KEY=value, also read by the shell wrapper).
CONF_KEYS = {
    "FLOWCEPT_EPILOG_PYTHON": "python",
    "FLOWCEPT_EPILOG_SHM_DIR": "shm_dir",
    "FLOWCEPT_EPILOG_RUN_DIR": "run_dir",
    "FLOWCEPT_EPILOG_ARCHIVE_DIR": "archive_dir",
    "FLOWCEPT_EPILOG_COMPACT": "compact",
    "FLOWCEPT_EPILOG_TRANSPORT": "transport",
    "FLOWCEPT_EPILOG_TIME_LIMIT": "time_limit",
    "FLOWCEPT_EPILOG_LOG_FILE": "log_file",
    "FLOWCEPT_EPILOG_SETTINGS": "settings",
    "FLOWCEPT_EPILOG_ALLOW_ROOT_JOBS": "allow_root_jobs",
}

_RING_ENTRY = re.compile(r"^(?P<ring>[A-Za-z0-9_.-]+?\.ring)(?P<suffix>|\.spill|\.spill\.cursor|"
                         r"\.spill\.cursor\.tmp)$")


@dataclass(frozen=True)
class EpilogSettings:
    """What the site configured (every value may use the templates of :func:`expand`)."""

    shm_dir: str = "/dev/shm"
    run_dir: str = "%w/flowcept-runs"        # the job's ./flowcept-runs (the default run_dir)
    archive_dir: str = ""                    # "" = the run dir: <run_dir>/<job>.h5
    compact: bool = False
    transport: str = ""                      # "" = from the settings file, else embedded
    time_limit: float = 120.0                # seconds for all the work of one job
    log_file: str = ""                       # "" = stderr only
    settings: str = ""                       # a flowcept settings file (TOML/JSON) for the rest
    allow_root_jobs: bool = True             # act for jobs of uid 0 (as root, on root's files)
    python: str = ""                         # only used by the shell wrapper


def _bool(value: str, key: str) -> bool:
    v = str(value).strip().lower()
    if v in ("1", "yes", "true", "on"):
        return True
    if v in ("0", "no", "false", "off", ""):
        return False
    raise ValueError(f"{key}={value!r}: expected yes or no")


def read_conf(path: str) -> Dict[str, str]:
    """Reads ``KEY=value`` lines (shell syntax subset: comments, optional quotes, ``export``).

    The file must be a regular file, not a symlink, owned by root or by us, and not writable by
    group or others: it decides what a root process does.
    """
    from flowcept.ops.safefs import UnsafePathError, open_owned
    try:
        fd = open_owned(path, os.geteuid())
    except UnsafePathError:
        if os.geteuid() == 0:
            raise
        fd = open_owned(path, 0)   # a root-owned site file read by a user
    with os.fdopen(fd, "r") as f:
        st = os.fstat(f.fileno())
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise UnsafePathError(path, "writable by group or others")
        text = f.read()
    out: Dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].strip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"{path}:{lineno}: expected KEY=value, got {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        out[key] = value
    return out


def settings_from(conf: Mapping[str, str], overrides: Mapping[str, object]) -> EpilogSettings:
    values: Dict[str, object] = {}
    for key, value in conf.items():
        name = CONF_KEYS.get(key)
        if name is not None:
            values[name] = value
    values.update({k: v for k, v in overrides.items() if v is not None})
    for name in ("compact", "allow_root_jobs"):
        if name in values and not isinstance(values[name], bool):
            values[name] = _bool(values[name], name)
    if "time_limit" in values:
        values["time_limit"] = float(values["time_limit"])
        if not 0 < values["time_limit"] <= 86400:
            raise ValueError(f"time_limit={values['time_limit']}: must be in (0, 86400] seconds")
    return EpilogSettings(**values)


# --------------------------------------------------------------------------- the job


@dataclass(frozen=True)
class JobContext:
    job: str
    uid: int
    gid: Optional[int]
    user: str
    work_dir: str
    home: str
    nodes: int = 1


def _node_count(env: Mapping[str, str]) -> int:
    """Nodes of the job: SLURM_JOB_NUM_NODES, else a guess from SLURM_JOB_NODELIST."""
    n = env.get("SLURM_JOB_NUM_NODES", "").strip()
    if n.isdigit():
        return int(n)
    nodelist = env.get("SLURM_JOB_NODELIST", "").strip()
    if not nodelist:
        return 1
    count = 0
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\])?", nodelist):
        m = re.search(r"\[([^\]]*)\]", part)
        if not m:
            count += 1
            continue
        for rng in m.group(1).split(","):
            lo, _, hi = rng.partition("-")
            count += int(hi) - int(lo) + 1 if hi.isdigit() and lo.isdigit() else 1
    return max(count, 1)


def job_from_env(env: Mapping[str, str]) -> JobContext:
    """The job the epilog is for, from slurmd's environment (ValueError if incomplete)."""
    job = env.get("SLURM_JOB_ID", "").strip()
    if not job:
        raise ValueError("SLURM_JOB_ID is not set: run me as a SLURM Epilog, or set it "
                         "(and SLURM_JOB_UID) by hand")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", job) or job in (".", ".."):
        raise ValueError(f"SLURM_JOB_ID={job!r} is not a job id")
    uid_text = env.get("SLURM_JOB_UID", "").strip()
    if uid_text:
        if not uid_text.isdigit():
            raise ValueError(f"SLURM_JOB_UID={uid_text!r} is not a uid")
        uid = int(uid_text)
    elif os.geteuid() != 0:
        uid = os.geteuid()
    else:
        raise ValueError("SLURM_JOB_UID is not set: refusing to guess whose files to touch")
    gid_text = env.get("SLURM_JOB_GID", "").strip()
    gid = int(gid_text) if gid_text.isdigit() else None
    user, home = env.get("SLURM_JOB_USER", ""), ""
    try:
        import pwd
        pw = pwd.getpwuid(uid)
        user = user or pw.pw_name
        home = pw.pw_dir
        if gid is None:
            gid = pw.pw_gid
    except KeyError:
        pass
    return JobContext(job=job, uid=uid, gid=gid, user=user or str(uid),
                      work_dir=env.get("SLURM_JOB_WORK_DIR", ""), home=home,
                      nodes=_node_count(env))


def expand(template: str, ctx: JobContext) -> str:
    """Expands ``%u`` user, ``%U`` uid, ``%j`` job id, ``%w`` the job's work dir
    (SLURM_JOB_WORK_DIR), ``%h`` the user's home, ``%n`` the node name, ``%%`` a percent."""
    def sub(m: "re.Match[str]") -> str:
        c = m.group(1)
        if c == "%":
            return "%"
        value = {"u": ctx.user, "U": str(ctx.uid), "j": ctx.job, "w": ctx.work_dir,
                 "h": ctx.home, "n": socket.gethostname().split(".")[0]}.get(c)
        if value is None:
            raise ValueError(f"unknown template %{c} in {template!r} (known: %u %U %j %w %h %n %%)")
        if not value:
            raise ValueError(f"%{c} in {template!r} is empty for job {ctx.job}")
        return value
    return re.sub(r"%(.)", sub, template)


# --------------------------------------------------------------------------- the work (as the user)


class Log:
    """One line per action; ``emit`` is where lines go (the pipe to the parent)."""

    def __init__(self, ctx: JobContext, emit: Callable[[str], None]):
        self.ctx = ctx
        self.emit = emit
        self.failed = False

    def __call__(self, action: str, message: str, *, failure: bool = False) -> None:
        if failure:
            self.failed = True
        self.emit(f"job={self.ctx.job} uid={self.ctx.uid} {action}: {message}")


def _check_run_dir(path: str, uid: int) -> None:
    """Chain-checks the existing part of ``path`` (what does not exist yet is created 0700)."""
    from flowcept.ops.safefs import check_dir_chain
    existing = path
    while not os.path.lexists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if os.path.islink(existing) or not os.path.isdir(existing):
        from flowcept.ops.safefs import UnsafePathError
        raise UnsafePathError(existing, "is a symbolic link or not a directory")
    os.close(check_dir_chain(existing, uid))


def _vet_ring_dir(ring_dir: str, uid: int, log: Log) -> Optional[List[str]]:
    """The ring files of the job that are safe to recover (None: the dir is unsafe or absent)."""
    from flowcept.ops.safefs import UnsafePathError, check_dir_chain, safe_listdir
    try:
        fd = check_dir_chain(ring_dir, uid)
    except FileNotFoundError:
        return None
    except UnsafePathError as e:
        log("refused", f"{e}; nothing read or written there", failure=True)
        return None
    except OSError as e:
        log("refused", f"cannot walk {ring_dir}: {e}", failure=True)
        return None
    try:
        # The per-user and per-job levels are made 0700 by flowcept: group/other write access
        # there means somebody else could have swapped entries.  (Both were just chain-checked.)
        for path, st in ((os.path.dirname(ring_dir), os.lstat(os.path.dirname(ring_dir))),
                         (ring_dir, os.fstat(fd))):
            if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                log("refused", f"unsafe path {path!r}: writable by group/others "
                    f"({stat.filemode(st.st_mode)}); nothing read or written there", failure=True)
                return None
        names = safe_listdir(fd)
        families: Dict[str, List[str]] = {}
        bad_rings = set()
        for name in names:
            m = _RING_ENTRY.match(name)
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            reason = None
            if stat.S_ISLNK(st.st_mode):
                reason = "is a symbolic link"
            elif not stat.S_ISREG(st.st_mode):
                reason = f"is not a regular file ({stat.filemode(st.st_mode)})"
            elif st.st_uid != uid:
                reason = f"owned by uid {st.st_uid}, expected {uid}"
            elif st.st_nlink != 1:
                reason = f"has {st.st_nlink} hard links"
            if m is None:
                log("ignored", f"{os.path.join(ring_dir, name)}: not a flowcept ring file"
                    + (f" ({reason}; not touched)" if reason else " (not touched)"),
                    failure=reason is not None)
                continue
            ring = m.group("ring")
            families.setdefault(ring, []).append(name)
            if reason:
                bad_rings.add(ring)
                log("refused", f"unsafe path {os.path.join(ring_dir, name)!r}: {reason}; "
                    f"ring {ring} left alone, nothing read or written through it", failure=True)
        good = []
        for ring, members in sorted(families.items()):
            if ring in bad_rings:
                continue
            if ring not in members:
                log("ignored", f"{os.path.join(ring_dir, members[0])}: no ring file beside it")
                continue
            good.append(os.path.join(ring_dir, ring))
        return good
    finally:
        os.close(fd)


def _vet_spill_paths(rings: List[str], log: Log) -> List[str]:
    """Keeps the rings whose header names their own spill file (``<ring>.spill`` beside it).

    The spill path is stored in the ring file, which its producer wrote: a ring naming another
    file would make the consumer read that file.  Opening the ring here only maps it (the C
    open is O_NOFOLLOW and checks the owner); nothing is consumed.
    """
    from flowcept.native.ring import Ring, RingError
    good = []
    for path in rings:
        try:
            ring = Ring.open(path)
        except RingError as e:
            log("refused", f"{path}: {e.strerror}; left alone", failure=True)
            continue
        try:
            spill = ring.spill_path
        finally:
            ring.close()
        if spill and spill != path + ".spill":
            log("refused", f"{path}: its header names spill file {spill!r}, not "
                f"{path + '.spill'!r}; ring left alone, nothing read through it", failure=True)
            continue
        good.append(path)
    return good


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
             "flowcept.osutil", "flowcept.errors", "flowcept.ops.safefs", "traceback", "glob",
             "pwd", "grp", "json", "hashlib", "lmdb", "lmdb._envid", "lmdb._config", "msgpack"]
    if settings.compact:
        names += ["flowcept.archive", "flowcept.archive.compact", "flowcept.archive.hdf5",
                  "flowcept.query.tasks", "h5py", "numpy", "zlib", "concurrent.futures",
                  "datetime", "secrets", "numpy.ma"]
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
        compact(job_dir, partial, job=ctx.job, progress=False)
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


def _open_log(path: str):
    """The log file, appended to, created 0600, never through a symlink, owned by us."""
    from flowcept.ops.safefs import open_owned
    fd = open_owned(path, os.geteuid(), os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode=0o600)
    if os.fstat(fd).st_mode & 0o077:
        os.fchmod(fd, 0o600)
    return os.fdopen(fd, "a", buffering=1)


def _stamp(line: str) -> str:
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {socket.gethostname()} flowcept-epilog[{os.getpid()}]: {line}"


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
    rfd, wfd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:   # the child: become the user, do the work, report through the pipe
        code = 1
        try:
            os.close(rfd)
            pipe = os.fdopen(wfd, "w", buffering=1)

            def emit(line: str) -> None:
                pipe.write(json.dumps(line) + "\n")

            log = Log(ctx, emit)
            try:
                if os.geteuid() == 0 and ctx.uid != 0:
                    from flowcept.ops.safefs import drop_privileges
                    drop_privileges(ctx.uid, ctx.gid)
                    log("privileges", f"dropped to uid {os.getuid()} gid {os.getgid()}")
                elif ctx.uid == 0:
                    log("privileges", "job of root: working as root on root's files only")
                os.umask(0o077)
                do_job(ctx, settings, config, log)
                code = 1 if log.failed else 0
            except BaseException as e:   # report, never raise out of the child
                import traceback
                tb = traceback.format_exc().strip().splitlines()
                log("error", f"{type(e).__name__}: {e} [{tb[-3] if len(tb) > 2 else ''}]",
                    failure=True)
                code = 1
            pipe.flush()
        finally:
            os._exit(code)
    os.close(wfd)
    deadline = time.monotonic() + settings.time_limit
    buf = b""
    timed_out = False
    with os.fdopen(rfd, "rb", buffering=0) as r:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([r], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = r.read(65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                try:
                    write(str(json.loads(raw.decode())))
                except ValueError:
                    write(f"job={ctx.job} (unparsable line from worker) {raw[:200]!r}")
    if timed_out:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        write(f"job={ctx.job} uid={ctx.uid} timeout: work not finished within "
              f"{settings.time_limit:g} s, killed; what was committed stays (re-run is harmless)")
    _, status = os.waitpid(pid, 0)
    if timed_out:
        return 1
    if os.WIFSIGNALED(status):
        write(f"job={ctx.job} uid={ctx.uid} error: worker killed by signal {os.WTERMSIG(status)}")
        return 1
    code = os.WEXITSTATUS(status)
    write(f"job={ctx.job} uid={ctx.uid} done: exit {code}")
    return code


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


def settings_from_args(args, env: Optional[Mapping[str, str]] = None) -> EpilogSettings:
    env = os.environ if env is None else env
    path = args.conf or env.get("FLOWCEPT_EPILOG_CONF") or (
        DEFAULT_CONF if os.path.exists(DEFAULT_CONF) else None)
    conf = read_conf(path) if path else {}
    overrides = {"shm_dir": args.shm_dir, "run_dir": args.run_dir,
                 "archive_dir": args.archive_dir, "compact": args.compact,
                 "transport": args.transport, "time_limit": args.time_limit,
                 "log_file": args.log_file, "settings": args.settings}
    return settings_from(conf, overrides)


def main(args) -> int:
    try:
        settings = settings_from_args(args)
    except (OSError, ValueError) as e:
        sys.stderr.write(_stamp(f"error: configuration: {e}") + "\n")
        return 2
    return run_epilog(settings)


__all__ = ["EpilogSettings", "JobContext", "read_conf", "settings_from", "job_from_env", "expand",
           "run_epilog", "do_job"]
