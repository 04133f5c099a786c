"""A captured run that goes on while a test watches it: FIRST tasks, then it waits for the
file named by argv[1] to appear, then SECOND more tasks (one of them fails), then exits."""
import os
import sys
import time

from flowcept import Flowcept, flowcept_task

FIRST, SECOND = 30, 45


@flowcept_task
def step(i):
    if i == FIRST + 7:
        raise RuntimeError(f"step {i} diverged")
    time.sleep(0.002)
    return i * i


if __name__ == "__main__":
    go = sys.argv[1]
    with Flowcept(workflow_name="live-run", campaign_id="watch"):
        for i in range(FIRST):
            step(i)
        deadline = time.monotonic() + 120
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.05)
        for i in range(FIRST, FIRST + SECOND):
            try:
                step(i)
            except RuntimeError:
                pass
