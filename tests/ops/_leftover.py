"""Test helper: a producer that pushes N tasks into its ring and then SIGKILLs itself
(nothing drains it), leaving ring (and, with a small ring, spill) files for the epilog.

    python _leftover.py JOB RANK N [ring_bytes]
Configuration (shm_dir, run_dir) comes from FLOWCEPT_* in the environment.
"""
import os
import signal
import sys

from flowcept.capture import session as runtime
from flowcept.capture.task import flowcept_task
from flowcept.config import load_config

job, rank, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
extra = {"ring_bytes": int(sys.argv[4])} if len(sys.argv) > 4 else {}
cfg = load_config(job_id=job, full_policy="spill", **extra)
# producer only (no drainer); LEFTOVER_RING_DIR: make the ring there (a test chowns it after)
s = runtime.Session(cfg, job, rank=rank, ring_dir=os.environ.get("LEFTOVER_RING_DIR") or None)
runtime.set_current(s)


@flowcept_task
def work(i):
    return i * 2


for i in range(n):
    work(i)
st = s.stats()
sys.stdout.write(f"{s.ring_path} pushed={st['pushed']} spilled={st['spilled']}\n")
sys.stdout.flush()
os.kill(os.getpid(), signal.SIGKILL)
