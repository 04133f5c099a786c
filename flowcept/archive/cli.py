"""`flowcept compact` and `flowcept report` (picked up by flowcept.cli)."""
from __future__ import annotations

import argparse
import os
import sys


def _guess_run_dir(path: str, job: str):
    """The run directory of ``job`` from a compaction PATH (the job dir or its parent)."""
    p = os.path.abspath(path)
    if os.path.basename(p) == job:
        return os.path.dirname(p)
    if os.path.isdir(os.path.join(p, job)):
        return p
    return None


def _recover_first(args):
    """--recover: drain what the job left on this node into its store before compacting
    (compaction itself only reads stores).  Returns the recovery's description."""
    from flowcept.archive import ArchiveError
    from flowcept.node.recovery import recover_job
    rr = recover_job(args.recover, run_dir=args.run_dir or _guess_run_dir(args.path, args.recover),
                     shm_dir=args.shm_dir)
    if not rr.ok:
        raise ArchiveError(f"recovery of job {args.recover} failed: {rr.describe()}")
    return rr.describe()


def _cmd_compact(args) -> int:
    from flowcept.archive import ArchiveError
    from flowcept.archive.compact import compact
    out = args.output or (os.path.basename(os.path.abspath(args.path).rstrip(os.sep)) + ".h5")
    if _is_hdf5(args.path):
        print(f"flowcept compact: error: {args.path} is already an archive: compact reads a run "
              f"directory (e.g. ./flowcept-runs/<job>); `flowcept report {args.path}` reads "
              f"this file", file=sys.stderr)
        return 2
    try:
        if args.recover:
            print(_recover_first(args))
        rep = compact(args.path, out, append=not args.no_append, overwrite=args.overwrite,
                      compression=args.compression, level=args.level, threads=args.threads,
                      progress=True if args.progress else None if not args.no_progress else False,
                      job=args.job)
    except FileExistsError:
        print(f"flowcept compact: error: {out} exists: pass --overwrite to replace it, or leave "
              f"out --no-append to merge the new records into it", file=sys.stderr)
        return 2
    except ArchiveError as e:
        hint = ""
        if os.path.exists(out) and not args.overwrite and str(out) in str(e):
            hint = f"; pass --overwrite to replace {out} (or -o another file)"
        print(f"flowcept compact: error: {_one_line(e)}{hint}", file=sys.stderr)
        return 2
    print(rep.describe())
    return 0


def _cmd_report(args) -> int:
    from flowcept.archive import ArchiveError
    from flowcept.archive.report import report
    if os.path.isdir(args.archive):
        print(f"flowcept report: error: {args.archive} is a directory; report reads an archive "
              f"file: write one with `flowcept compact {args.archive} -o job.h5`, or summarise "
              f"the run directory with `flowcept summary {args.archive}`", file=sys.stderr)
        return 2
    try:
        text, written, note = report(args.archive, args.output, plots=not args.no_plots, top=args.top,
                                     write_html=not args.text_only)
    except ArchiveError as e:
        print(f"flowcept report: error: {_one_line(e)}", file=sys.stderr)
        return 2
    print(text)
    if written:
        print("\nwrote " + ", ".join(written))
    if note:
        print(note, file=sys.stderr)
    return 0


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 400 else text[:400] + " ..."


def _is_hdf5(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(8) == b"\x89HDF\r\n\x1a\n"
    except OSError:
        return False


def register(sub) -> None:
    p = sub.add_parser(
        "compact", help="compact a job's LMDB store(s) into one HDF5 archive",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Reads every store under PATH (a run directory such as ./flowcept-runs/<job>: "
                    "one store per node) and writes one self-describing HDF5 file: one compressed "
                    "column per record field, a string table, the payloads, workflow documents and "
                    "a time index (layout: docs/archive-format.md).  The file is written under a "
                    "temporary name and renamed when complete.  If OUTPUT exists, the new records "
                    "are merged into it: nothing is stored twice (same workflow and task id).",
        epilog="examples:\n"
               "  flowcept compact flowcept-runs/1234 -o job1234.h5\n"
               "  flowcept compact flowcept-runs/1234 -o job1234.h5 --recover 1234   # after a crash\n"
               "  flowcept report job1234.h5")
    p.add_argument("path", help="run, job or store directory")
    p.add_argument("-o", "--output", help="archive file (default: <basename of PATH>.h5 here)")
    p.add_argument("--recover", metavar="JOB",
                   help="first drain the rings and spill files JOB left on this node into its store")
    p.add_argument("--run-dir", help="run directory for --recover (default: guessed from PATH, else config)")
    p.add_argument("--shm-dir", help="ring directory for --recover (default: config shm_dir)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--append", action="store_true",
                   help="merge into an existing OUTPUT without duplicates (the default)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    g.add_argument("--no-append", action="store_true", help="fail if OUTPUT exists")
    p.add_argument("--compression", choices=("gzip", "lzf", "none"), default="gzip",
                   help="column and payload compression (default gzip: any HDF5 reads it; "
                        "lzf needs h5py or hdf5plugin)")
    p.add_argument("--level", type=int, default=1, help="gzip level 0-9 (default 1: fastest)")
    p.add_argument("--threads", type=int, default=None, help="compression threads (default: CPUs)")
    p.add_argument("--job", help="job name stored with the records (default: from the path)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--progress", action="store_true", help="progress bar on stderr even if not a TTY")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_compact)

    p = sub.add_parser(
        "report", help="summary of an archive and a one-file HTML job report beside it",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Prints a summary of an archive written by `flowcept compact` (tasks per "
                    "activity with duration percentiles, busy time per rank and imbalance, "
                    "throughput, slowest and failed tasks) and writes one self-contained HTML file "
                    "(pictures inline, nothing fetched): the summary tables, the timeline (one lane "
                    "per rank, aggregated to the pixel when tasks outnumber pixels, failures as a "
                    "strip of failure share per lane), durations per activity, tasks finished and "
                    "failed over time, load per rank, failures grouped by error, the slowest tasks "
                    "and the slowest chain of data dependencies.  The pictures need matplotlib "
                    "(pip install 'flowcept[report]').",
        epilog="examples:\n"
               "  flowcept report job1234.h5                 # writes job1234.report.html beside it\n"
               "  flowcept report job1234.h5 -o ~/www/       # into a directory\n"
               "  flowcept report job1234.h5 --text-only     # the summary alone")
    p.add_argument("archive", help="HDF5 archive (from flowcept compact)")
    p.add_argument("-o", "--output", metavar="FILE|DIR",
                   help="the HTML file, or a directory for it (default: <archive>.report.html beside "
                        "the archive, wherever the command runs)")
    p.add_argument("--top", type=int, default=5, help="how many slowest/failed tasks to list (default 5)")
    p.add_argument("--no-plots", action="store_true", help="HTML with the tables only (no matplotlib)")
    p.add_argument("--text-only", action="store_true", help="print the summary, write no HTML")
    p.set_defaults(func=_cmd_report)
