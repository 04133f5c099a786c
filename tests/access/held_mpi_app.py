"""An MPI run that holds still while a test watches its rings: every rank captures FIRST
tasks, then rank 0 waits for the file named by argv[2] to appear (at most 120 s, so a
failed test never leaves it running), all ranks meet at a barrier, capture SECOND more
tasks and exit.  argv[1] is the run directory."""
import os
import sys
import time

from mpi4py import MPI

from flowcept.mpi import instrument

FIRST, SECOND = 200, 300


def main():
    run_dir, go = sys.argv[1], sys.argv[2]
    comm = MPI.COMM_WORLD
    prov = instrument(comm, workflow_name="held", campaign_id="metrics", run_dir=run_dir)

    @prov.task
    def work(i, rank):
        return i * rank

    with prov:
        for i in range(FIRST):
            work(i, comm.Get_rank())
        if comm.Get_rank() == 0:
            deadline = time.monotonic() + 120
            while not os.path.exists(go) and time.monotonic() < deadline:
                time.sleep(0.05)
        comm.Barrier()
        for i in range(FIRST, FIRST + SECOND):
            work(i, comm.Get_rank())


if __name__ == "__main__":
    main()
