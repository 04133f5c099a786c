"""A test MPI app with a known number of tasks per rank.

Each rank runs --tasks outer tasks, each with --children nested children,
and writes its progress (outer tasks completed) to <progress-dir>/<rank>
after every outer task.  --kill-rank R makes rank R SIGKILL itself after
--kill-after outer tasks.  --no-mpi runs as a plain process.
"""
import argparse
import os
import signal
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=100)
    ap.add_argument("--children", type=int, default=2)
    ap.add_argument("--progress-dir", default=None)
    ap.add_argument("--kill-rank", type=int, default=-1)
    ap.add_argument("--kill-after", type=int, default=10)
    ap.add_argument("--no-mpi", action="store_true")
    ap.add_argument("--hold", type=float, default=0.0, help="sleep per task (s)")
    args = ap.parse_args()

    if args.no_mpi:
        sys.modules["mpi4py"] = None  # as if mpi4py were not installed
        comm = None
    else:
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
    from flowcept.mpi import instrument

    with instrument(comm, workflow_name="count") as prov:
        rank = prov.rank

        @prov.task
        def child(i, j):
            return i * 1000 + j

        @prov.task
        def outer(i):
            if args.hold:
                import time
                time.sleep(args.hold)
            return sum(child(i, j) for j in range(args.children))

        for i in range(args.tasks):
            outer(i)
            if args.progress_dir:
                path = os.path.join(args.progress_dir, str(rank))
                with open(path + ".tmp", "w") as f:
                    f.write(str(i + 1))
                os.replace(path + ".tmp", path)   # atomic: a kill leaves old or new
            if rank == args.kill_rank and i + 1 == args.kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
        if rank == 0:
            sys.stdout.write(f"job={prov.job_name} workflow={prov.workflow_id:016x}\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
