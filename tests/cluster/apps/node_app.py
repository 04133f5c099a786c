"""A multi-node test app: every rank runs --rounds rounds of --per-round
``work(rank, i)`` tasks (i counts from 0 over the whole run) and sleeps
--pause seconds between rounds, so that the run lasts long enough for the
test to kill and move keepers while batches flow.  Each rank prints
``rank=R node=HOST node_rank=K`` (one line), rank 0 also the job name."""
import argparse
import socket
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--per-round", type=int, default=200)
    ap.add_argument("--pause", type=float, default=0.2)
    args = ap.parse_args()
    from mpi4py import MPI
    from flowcept.mpi import instrument
    comm = MPI.COMM_WORLD
    node_rank = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()
    with instrument(comm, workflow_name="multinode") as prov:
        @prov.task
        def work(rank, i):
            return rank * i

        i = 0
        for _ in range(args.rounds):
            for _ in range(args.per_round):
                work(prov.rank, i)
                i += 1
            time.sleep(args.pause)
        sys.stdout.write(f"rank={prov.rank} node={socket.gethostname()} node_rank={node_rank}\n")
        sys.stdout.flush()
        if prov.rank == 0:
            sys.stdout.write(f"job={prov.job_name}\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
