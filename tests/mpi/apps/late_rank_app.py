"""A rank that ends long after its node leader: --late-rank R sleeps --late-s
seconds after its first half of tasks, then runs the second half."""
import argparse
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=50)
    ap.add_argument("--late-rank", type=int, default=2)
    ap.add_argument("--late-s", type=float, default=3.0)
    args = ap.parse_args()
    from mpi4py import MPI
    from flowcept.capture.mpi import instrument

    prov = instrument(MPI.COMM_WORLD, workflow_name="late")   # finalized at exit

    @prov.task
    def work(i):
        return i * i

    for i in range(args.tasks):
        work(i)
    if prov.rank == args.late_rank:
        time.sleep(args.late_s)
    for i in range(args.tasks, 2 * args.tasks):
        work(i)
    sys.stdout.write(f"rank {prov.rank} done\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
