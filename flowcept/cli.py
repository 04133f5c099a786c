"""The ``flowcept`` command line.  ``flowcept <command> --help`` explains each."""
from __future__ import annotations

import argparse
import sys


def _is_hdf5(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(8) == b"\x89HDF\r\n\x1a\n"
    except OSError:
        return False


def _cmd_summary(args) -> int:
    from flowcept.query.tasks import read_records
    if _is_hdf5(args.path):
        print(f"flowcept summary: error: {args.path} is an HDF5 archive; summary reads a run "
              f"directory: use `flowcept report {args.path}` (or flowcept.archive in Python)",
              file=sys.stderr)
        return 2
    from flowcept.query.summary import format_summary
    r = read_records(args.path)
    print(format_summary(r.records, r.activity, title=f"flowcept summary of {args.path}"))
    return 0


def _cmd_recover(args) -> int:
    from flowcept.node.recovery import recover_job
    report = recover_job(args.job, shm_dir=args.shm_dir, run_dir=args.run_dir,
                         transport=args.transport, progress=None)
    print(report.describe())
    return 0 if report.ok else 1


def _cmd_drain(args) -> int:
    import signal
    import threading
    from flowcept.config import load_config
    from flowcept.node.recovery import follow_job
    overrides = {k: v for k, v in (("shm_dir", args.shm_dir), ("run_dir", args.run_dir),
                                   ("transport", args.transport)) if v}
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"flowcept drain: leader of job {args.job} on this node; SIGTERM or Ctrl-C stops it "
          "after a last drain", file=sys.stderr, flush=True)
    report = follow_job(args.job, load_config(**overrides), stop=stop,
                        exit_when_idle_s=args.exit_when_idle)
    print(report.describe())
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="flowcept",
        description="HPC-native workflow provenance: inspect, recover, compact and report "
                    "captured runs.  Capture itself is done in your code "
                    "(@flowcept_task, flowcept.mpi.instrument).")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("summary", help="print tasks per activity and per rank from a run's store",
                       description="Reads the LMDB store(s) under PATH (a run directory such as "
                                   "./flowcept-runs/<job>) and prints a summary.")
    p.add_argument("path", help="run directory, job directory or store directory")
    p.set_defaults(func=_cmd_summary)

    p = sub.add_parser("recover", help="drain rings and spill files a job left on this node",
                       description="Finds the shared-memory rings and spill files of JOB on this "
                                   "node (left by killed ranks or a dead leader), drains every "
                                   "committed record into the job's store and removes the "
                                   "drained files.  Safe to run twice: nothing is stored twice.")
    p.add_argument("job", help="job name (SLURM job id, or the local-... name of the run)")
    p.add_argument("--shm-dir", default=None, help="where rings live (default: config shm_dir)")
    p.add_argument("--run-dir", default=None, help="run directory (default: config run_dir)")
    p.add_argument("--transport", default=None, help="transport to publish to (default: config)")
    p.set_defaults(func=_cmd_recover)

    p = sub.add_parser("drain", help="be the node leader of a C/C++/Fortran job: drain its rings live",
                       description="Drains the rings that the ranks of JOB create on this node "
                                   "(C API: fc_capture_init(NULL, ...)) while the job runs, into "
                                   "the configured transport (default: the job's LMDB store), "
                                   "and removes each ring once its rank has ended.  Run one per "
                                   "node next to the job, e.g. `srun --ntasks-per-node=1 --overlap "
                                   "flowcept drain $SLURM_JOB_ID &`.  Stops on SIGTERM/SIGINT, "
                                   "draining what is left.  Not for jobs using "
                                   "flowcept.mpi.instrument: those have their own leaders.")
    p.add_argument("job", help="job name (SLURM job id or FLOWCEPT_JOB_ID of the run)")
    p.add_argument("--exit-when-idle", type=float, default=None, metavar="SECONDS",
                   help="exit after SECONDS without a live ring: none appeared yet, or every "
                        "one seen has ended (no ring: no store is created)")
    p.add_argument("--shm-dir", default=None, help="where rings live (default: config shm_dir)")
    p.add_argument("--run-dir", default=None, help="run directory (default: config run_dir)")
    p.add_argument("--transport", default=None, help="transport to publish to (default: config)")
    p.set_defaults(func=_cmd_drain)

    for register in _plugins():
        register(sub)
    return ap


def _plugins():
    """Subcommands contributed by other modules (archive, keeper, ops)."""
    import importlib
    out = []
    for module in ("flowcept.archive.cli", "flowcept.keeper.cli", "flowcept.keeper.bridge_cli",
                   "flowcept.ops.cli", "flowcept.ops.config_cli", "flowcept.access.cli",
                   "flowcept.adapters.cli", "flowcept.compat.cli"):
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            if e.name and e.name.startswith(module.rsplit(".", 1)[0]):
                continue   # that part is not built in this version
            raise
        out.append(mod.register)
    return out


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 600 else text[:600] + " ..."


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so that the flush at
    exit does not raise again."""
    import os
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def main(argv=None) -> int:
    """Runs one command.  Errors are one line on stderr (``flowcept <cmd>:
    error: ...``), never a traceback: 2 for usage and configuration, 1 for
    anything else; a closed output pipe (``flowcept report x.h5 | head``)
    ends quietly."""
    import warnings
    from flowcept.config import ConfigError
    # configuration warnings (e.g. an unknown FLOWCEPT_* variable) are one line, once
    warnings.showwarning = lambda msg, cat, *a, **k: print(
        "flowcept: warning: " + _one_line(msg).removeprefix("flowcept: "), file=sys.stderr)
    args = build_parser().parse_args(argv)
    command = getattr(args, "command", None) or "?"
    try:
        rc = args.func(args) or 0
        sys.stdout.flush()
        return rc
    except BrokenPipeError:
        _quiet_stdout()
        return 141   # as a process killed by SIGPIPE
    except KeyboardInterrupt:
        print(f"flowcept {command}: interrupted", file=sys.stderr)
        return 130
    except (ConfigError, FileNotFoundError, PermissionError, ValueError) as e:
        print(f"flowcept {command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:
        print(f"flowcept {command}: error: {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
