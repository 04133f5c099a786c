"""Rank --full-rank finds no room for its ring (RLIMIT_FSIZE below the ring
size, as a nearly full /dev/shm): instrument() must raise on every rank,
promptly, naming shm_dir; no rank may hang in a start-up collective."""
import argparse
import resource
import signal
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--full-rank", type=int, default=1)
    args = ap.parse_args()
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    if comm.Get_rank() == args.full_rank:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))
    from flowcept.capture.mpi import instrument
    try:
        with instrument(comm, workflow_name="full"):
            sys.stdout.write(f"rank {comm.Get_rank()} started\n")
    except Exception as e:
        sys.stdout.write(f"rank {comm.Get_rank()} raised {type(e).__name__}: {e}\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
