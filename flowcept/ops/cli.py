"""Operations subcommands of ``flowcept`` (picked up by flowcept.cli): ``epilog``, ``prolog``,
``run``."""
from __future__ import annotations

import os
import shlex
import sys


def _cmd_epilog(args) -> int:
    from flowcept.ops import epilog
    return epilog.main(args)


def _cmd_prolog(args) -> int:
    """Prints ``export FLOWCEPT_...=...`` lines for SLURM's TaskProlog (runs as the user)."""
    from flowcept.ops import epilog
    if not os.environ.get("SLURM_JOB_ID", "").strip():
        sys.stderr.write("flowcept prolog: error: SLURM_JOB_ID is not set: `flowcept prolog` runs "
                         "from a SLURM TaskProlog (slurm/flowcept-taskprolog.sh); to try it by "
                         "hand, set SLURM_JOB_ID (and SLURM_JOB_UID)\n")
        return 2
    try:
        settings = epilog.settings_from_args(args)
        env = dict(os.environ)
        env.setdefault("SLURM_JOB_UID", str(os.getuid()))
        if not env.get("SLURM_JOB_WORK_DIR"):
            # A TaskProlog runs in the job's working directory (SLURM_JOB_WORK_DIR is not set
            # there; SLURM_SUBMIT_DIR is where sbatch ran, not --chdir).
            try:
                env["SLURM_JOB_WORK_DIR"] = os.getcwd()
            except OSError:
                env["SLURM_JOB_WORK_DIR"] = env.get("SLURM_SUBMIT_DIR", "")
        ctx = epilog.job_from_env(env)
        shm = os.path.abspath(epilog.expand(settings.shm_dir, ctx))
        run = os.path.abspath(epilog.expand(settings.run_dir, ctx))
    except (OSError, ValueError) as e:
        # A TaskProlog's stderr goes nowhere useful: "print ..." shows the message in the
        # task's output, and the task runs on with its own environment.
        sys.stdout.write(f"print flowcept prolog: error: {_one_line(e)}\n")
        return 0
    sys.stdout.write(f"export FLOWCEPT_SHM_DIR={shlex.quote(shm)}\n")
    sys.stdout.write(f"export FLOWCEPT_RUN_DIR={shlex.quote(run)}\n")
    if settings.transport:
        sys.stdout.write(f"export FLOWCEPT_TRANSPORT={shlex.quote(settings.transport)}\n")
    return 0


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _cmd_run(args) -> int:
    from flowcept.ops import launcher
    return launcher.main(args)


def register(sub) -> None:
    from flowcept.ops import launcher
    from flowcept.ops import epilog

    p = sub.add_parser(
        "epilog", help="SLURM epilog: recover what a job left on this node, compact it",
        description="Run by slurm/flowcept-epilog.sh after a job (as root under slurmd, or by "
                    "hand). Reads SLURM_JOB_ID, SLURM_JOB_UID (SLURM_JOB_GID, SLURM_JOB_USER, "
                    "SLURM_JOB_WORK_DIR); as root it forks a child that drops to the job's "
                    "user; the child refuses symlinks and other users' files, drains the job's "
                    "leftover rings and spill files into its store and, with --compact yes, "
                    "writes <job>.h5.  One log line per action.  Exit 0: done or nothing to do; "
                    "1: something refused or failed; 2: usage.")
    epilog.add_arguments(p)
    p.set_defaults(func=_cmd_epilog)

    p = sub.add_parser(
        "prolog", help="SLURM TaskProlog: print the job's FLOWCEPT_RUN_DIR/FLOWCEPT_SHM_DIR",
        description="Prints 'export FLOWCEPT_SHM_DIR=...' and 'export FLOWCEPT_RUN_DIR=...' "
                    "expanded from the same site configuration as the epilog, so that the "
                    "job writes where the epilog will look.  Use from a TaskProlog script.")
    epilog.add_arguments(p)
    p.set_defaults(func=_cmd_prolog)

    p = sub.add_parser(
        "run", help="run an unmodified Python script under capture",
        description="flowcept run [options] script.py [args...]: records the run as a task "
                    "(argv, exit status) and each call of the script's top-level functions; "
                    "under srun/mpiexec every rank is captured.  Exit status: the script's.")
    launcher.add_arguments(p)
    p.set_defaults(func=_cmd_run)
