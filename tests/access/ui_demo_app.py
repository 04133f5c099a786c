"""The run the web UI tests browse (and the docs' screenshots show): an MPI job, captured
through the real path, with enough tasks that the timeline aggregates (more tasks than
pixels), uneven load per rank, failures of two error types, and data passed between tasks
(load -> solve -> check, each step's checks -> reduce) for lineage.

    mpiexec -n 4 python ui_demo_app.py RUN_DIR [STEPS]
"""
import sys
import time

from mpi4py import MPI

from flowcept.mpi import instrument


class ConvergenceError(RuntimeError):
    pass


def spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def main():
    run_dir = sys.argv[1]
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 120
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    with instrument(comm, workflow_name="ui-demo", campaign_id="ui-tests", run_dir=run_dir) as prov:

        @prov.task
        def load(step, part):
            spin(0.0002)
            return f"block-{part}-{step}"

        @prov.task(output_names=["solution"])
        def solve(block, tolerance):
            spin(0.0004 * (1 + rank))          # higher ranks carry more work
            if block.endswith("-3-17") or block.endswith("-2-61"):
                raise ConvergenceError(f"{block}: no convergence to {tolerance} after 50 iterations")
            return block + ".sol"

        @prov.task(output_names=["ok"])
        def check(solution):
            spin(0.0001)
            if solution.startswith("block-1-") and solution.endswith(("-40.sol", "-90.sol")):
                raise ValueError(f"{solution}: residual is NaN")
            return solution + ".ok"

        @prov.task(output_names=["total"])
        def reduce(step, *oks):
            return f"step {step}: {len(oks)} of 2 blocks checked"

        for step in range(steps):
            oks = []
            for part in range(rank * 2, rank * 2 + 2):
                block = load(step, part)
                try:
                    oks.append(check(solve(block, 1e-6)))
                except (ConvergenceError, ValueError):
                    pass
            reduce(step, *oks)
            if step % 20 == 19:
                comm.Barrier()


if __name__ == "__main__":
    main()
