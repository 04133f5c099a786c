"""2D heat diffusion with MPI row decomposition, captured by flowcept.

    mpiexec -n 4 python examples/heat2d.py --steps 200 --n 256

Each rank owns a band of rows; every step exchanges halo rows with its
neighbours (MPI Sendrecv), applies a 5-point stencil, and every
``--check-every`` steps computes the global residual (Allreduce).  Tasks:
``timestep`` (parent) > ``exchange_halos``, ``diffuse``, ``residual``;
plus ``init_grid`` and ``summarize``.  ``--no-capture`` runs the same code
without flowcept (for overhead measurements).
"""
import argparse
import sys
import time

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=256, help="global grid size (n x n)")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--check-every", type=int, default=10)
    ap.add_argument("--no-capture", action="store_true", help="run without flowcept")
    ap.add_argument("--fail-rank", type=int, default=-1,
                    help="(testing) this rank raises at the last step")
    ap.add_argument("--run-dir", default=None, help="flowcept run directory")
    args = ap.parse_args(argv)

    try:
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
    except ImportError:
        MPI, comm = None, None
    rank = comm.Get_rank() if comm else 0
    size = comm.Get_size() if comm else 1

    if args.no_capture:
        import contextlib
        prov = contextlib.nullcontext()

        def task(f=None, **_):
            return f if f is not None else (lambda g: g)
    else:
        from flowcept.mpi import instrument
        extra = {"run_dir": args.run_dir} if args.run_dir else {}
        prov = instrument(comm, workflow_name="heat2d", campaign_id="examples", **extra)
        task = prov.task

    up = rank - 1 if rank > 0 else (MPI.PROC_NULL if MPI else -1)
    down = rank + 1 if rank < size - 1 else (MPI.PROC_NULL if MPI else -1)

    @task
    def init_grid(n, rank, size):
        rows = n // size + (1 if rank < n % size else 0)
        u = np.zeros((rows + 2, n))
        if rank == 0:
            u[1, :] = 100.0          # hot top edge
        return u

    @task
    def exchange_halos(step, u):
        if comm is not None and size > 1:
            comm.Sendrecv(u[1], dest=up, recvbuf=u[-1], source=down)
            comm.Sendrecv(u[-2], dest=down, recvbuf=u[0], source=up)
        return {"step": step}

    @task(output_names=["delta"])
    def diffuse(step, u, alpha):
        inner = u[1:-1, 1:-1]
        lap = u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:] - 4 * inner
        delta = alpha * lap
        inner += delta
        if rank == 0:
            u[1, :] = 100.0
        return float(np.abs(delta).max())

    @task(output_names=["residual"])
    def residual(step, local_delta):
        if comm is not None:
            return comm.allreduce(local_delta, op=MPI.MAX)
        return local_delta

    @task(output_names=["delta", "residual"])
    def timestep(step, u, alpha, check):
        exchange_halos(step, u)
        delta = diffuse(step, u, alpha)
        res = residual(step, delta) if check else None
        if step == args.steps - 1 and rank == args.fail_rank:
            raise RuntimeError(f"rank {rank} failed on purpose at step {step}")
        return delta, res

    @task
    def summarize(u):
        return {"mean": float(u[1:-1].mean()), "max": float(u[1:-1].max())}

    t0 = time.perf_counter()
    with prov:
        u = init_grid(args.n, rank, size)
        res = None
        for step in range(args.steps):
            _, r = timestep(step, u, args.alpha, step % args.check_every == 0)
            res = r if r is not None else res
        stats = summarize(u)
        loop_s = time.perf_counter() - t0      # the computation, capture included
    elapsed = time.perf_counter() - t0         # plus flowcept's final drain
    if rank == 0:
        sys.stdout.write(f"heat2d: {size} ranks, {args.n}x{args.n}, {args.steps} steps, "
                         f"residual {res:.3e}, mean {stats['mean']:.3f}, {elapsed:.3f} s "
                         f"(loop {loop_s:.3f} s)"
                         + ("" if args.no_capture else f", run dir {prov.run_dir}") + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
