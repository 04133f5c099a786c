"""``flowcept run script.py [args...]``: capture an unmodified Python script.

What is recorded (the choice, and why):

* One task for the script run itself: activity ``run:<script name>``, ``used`` = the script's
  absolute path, its ``argv`` as the script saw it and the working directory, ``generated`` =
  ``{"exit_status": N}``; status ERROR when the script raised or exited non-zero (the
  exception's type and message are in ``error``).  Every other task of the process is its
  child (parent links follow the calling context).
* Every function and ``async`` function defined at the *top level* of the script is recorded
  as a task on each call, like ``@flowcept_task`` (activity = the function name, ``used`` =
  its arguments, ``generated`` = its return value).  This is done by adding the decorator to
  those ``def`` statements in the script's syntax tree before compiling it (line numbers and
  tracebacks are unchanged), not with a profiling hook: only those functions pay (about 1 µs a
  call), the rest of the program runs at full speed.  Methods, nested functions and functions
  defined inside ``if`` blocks are not wrapped; ``--no-functions`` turns the wrapping off
  (then only the run itself is a task).  Functions the script already decorates with
  ``flowcept_task`` are not wrapped twice.

Capture is started with :func:`flowcept.mpi.instrument`: under an MPI launcher (``srun``,
``mpiexec``: detected from PMI/PMIx/Open MPI environment variables, or forced with
``--mpi yes``) every rank is captured and node leaders drain their node's rings; otherwise the
process is its own leader.  The script runs as ``__main__`` (like ``python script.py``: its
directory first on ``sys.path``, ``sys.argv[0]`` its path).  At the end the records are
drained into the run directory and the script's exit status is returned.  A script that calls
``instrument()``/``Flowcept`` itself does not need (and should not use) the launcher.
"""
from __future__ import annotations

import ast
import os
import sys
import time
import types
from typing import List, Optional, Sequence

_MPI_ENV = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS",
            "MV2_COMM_WORLD_SIZE", "I_MPI_HYDRA_HOST_FILE")
_WRAPPER = "__flowcept_task__"


def under_mpi_launcher(env=None) -> bool:
    env = os.environ if env is None else env
    return any(env.get(v) for v in _MPI_ENV)


class _AddDecorator(ast.NodeTransformer):
    """Adds ``@__flowcept_task__`` to top-level function definitions."""

    def __init__(self):
        self.wrapped: List[str] = []

    def visit_Module(self, node: ast.Module) -> ast.Module:
        for stmt in node.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if any(_is_flowcept_decorator(d) for d in stmt.decorator_list):
                    continue
                deco = ast.Name(id=_WRAPPER, ctx=ast.Load())
                ast.copy_location(deco, stmt)
                # innermost: the recorded call is the function itself, under any other decorator
                stmt.decorator_list.append(deco)
                self.wrapped.append(stmt.name)
        return node


def _is_flowcept_decorator(d: ast.expr) -> bool:
    target = d.func if isinstance(d, ast.Call) else d
    name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
    return name in ("flowcept_task", "task")


def compile_script(path: str, source: bytes, wrap_functions: bool):
    """The script's code object (and the names of the wrapped functions)."""
    tree = ast.parse(source, filename=path)
    wrapped: List[str] = []
    if wrap_functions:
        t = _AddDecorator()
        tree = t.visit(tree)
        ast.fix_missing_locations(tree)
        wrapped = t.wrapped
    return compile(tree, path, "exec", dont_inherit=True), wrapped


def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    sys.stderr.write(f"{code}\n")
    return 1


def run_script(path: str, argv: Sequence[str] = (), *, wrap_functions: bool = True,
               mpi: str = "auto", workflow_name: Optional[str] = None,
               **config_overrides) -> int:
    """Runs the script at ``path`` with ``argv`` under capture; returns its exit status."""
    from flowcept.capture.task import FlowceptTask, flowcept_task
    from flowcept.record.layout import STATUS_ERROR, STATUS_FINISHED
    from flowcept.capture.mpi import instrument

    path = os.path.abspath(path)
    with open(path, "rb") as f:
        source = f.read()
    code, wrapped = compile_script(path, source, wrap_functions)   # SyntaxError before capture

    comm = None
    use_mpi = mpi == "yes" or (mpi == "auto" and under_mpi_launcher())
    if use_mpi:
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
    name = workflow_name or os.path.splitext(os.path.basename(path))[0]
    if comm is None:
        # instrument(None) would pick MPI.COMM_WORLD when mpi4py is importable; a plain
        # (non-MPI) run must not initialise MPI.
        from flowcept.config import load_config
        from flowcept.capture.mpi import Instrumentation
        entered = time.time_ns()
        config = load_config(**config_overrides)
        inst = Instrumentation(None, config, name, None, None)
        if config.enabled:
            inst._start(entered)
        else:
            inst.finalized = True
    else:
        inst = instrument(comm, workflow_name=name, **config_overrides)

    main = types.ModuleType("__main__")
    main.__dict__.update({"__file__": path, "__cached__": None, "__loader__": None,
                          "__package__": None, "__spec__": None, "__builtins__": __builtins__,
                          _WRAPPER: flowcept_task})
    saved_main = sys.modules.get("__main__")
    saved_argv, saved_path0 = sys.argv[:], sys.path[0] if sys.path else None
    sys.modules["__main__"] = main
    sys.argv = [path, *argv]
    if sys.path:
        sys.path[0] = os.path.dirname(path)
    else:
        sys.path.insert(0, os.path.dirname(path))

    task = FlowceptTask(activity_id=f"run:{os.path.basename(path)}",
                        used={"script": path, "argv": list(sys.argv), "cwd": os.getcwd(),
                              "wrapped_functions": wrapped})
    task.begin()
    status, error = 0, None
    t0 = time.monotonic()
    try:
        try:
            exec(code, main.__dict__)
        except SystemExit as e:
            status = _exit_code(e)
        except KeyboardInterrupt as e:
            status, error = 130, e
            import traceback
            traceback.print_exc()
        except BaseException as e:
            status, error = 1, e
            import traceback
            traceback.print_exception(type(e), e, e.__traceback__.tb_next if e.__traceback__ else None)
        try:
            sys.stdout.flush()
        except Exception:
            pass
        task.end(generated={"exit_status": status, "elapsed_s": round(time.monotonic() - t0, 6)},
                 status=STATUS_ERROR if status else STATUS_FINISHED, error=error)
    finally:
        sys.argv = saved_argv
        if saved_path0 is not None and sys.path:
            sys.path[0] = saved_path0
        if saved_main is not None:
            sys.modules["__main__"] = saved_main
        # An exception on one rank of several: recorded, then the job is aborted (as with
        # instrument(), abort_on_error) so that the other ranks do not wait for it forever.
        inst.finalize(error if isinstance(error, Exception) else None)
    return status


def add_arguments(p) -> None:
    p.add_argument("--no-functions", action="store_true",
                   help="record only the script run, not calls of its top-level functions")
    p.add_argument("--mpi", choices=("auto", "yes", "no"), default="auto",
                   help="capture every MPI rank (auto: when started by srun/mpiexec)")
    p.add_argument("--workflow-name", default=None, help="default: the script's name")
    p.add_argument("--run-dir", default=None, help="where records go (default: config run_dir)")
    p.add_argument("script", help="the Python script to run")
    p.add_argument("args", nargs="...", help="its arguments")


def main(args) -> int:
    overrides = {"run_dir": args.run_dir} if args.run_dir else {}
    if not os.path.isfile(args.script):
        sys.stderr.write(f"flowcept run: no such script: {args.script}\n")
        return 2
    return run_script(args.script, args.args, wrap_functions=not args.no_functions,
                      mpi=args.mpi, workflow_name=args.workflow_name, **overrides)
