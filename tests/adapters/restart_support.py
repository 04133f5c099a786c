"""An observer (``flowcept observe ...``) SIGKILLed at random points while its
source changes, and restarted: the harness of test_adapter_restart.py.

Each kill takes the observing process alone (its leader process drains what
it left, as it does when its parent dies) or the whole process group (the
leader dies too: the rings wait for ``flowcept recover``, as after a job
killed at its wall-time limit).  At the end a last observer runs until it
has caught up, every job's leftovers are recovered, and the stored task
documents are returned.
"""
import glob
import os
import random
import signal
import subprocess
import sys
import threading
import time


class KilledObserver:
    """Runs ``flowcept observe ARGS`` again and again, killing each run at a
    random point; ``kills`` counts the kills."""

    def __init__(self, args, env, seed, log_dir, min_s=0.3, max_s=2.5):
        self.args = [sys.executable, "-m", "flowcept", "observe", *map(str, args)]
        self.env = env
        self.rng = random.Random(seed)
        self.log_dir = log_dir
        self.min_s, self.max_s = min_s, max_s
        self.kills = 0
        self.runs = 0
        self._stop = threading.Event()
        self._thread = None
        self._t0 = None

    def _spawn(self, *extra):
        self.runs += 1
        out = open(os.path.join(self.log_dir, f"observe-{self.runs}.log"), "wb")
        return subprocess.Popen(self.args + list(extra), env=self.env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def run_clean(self, seconds):
        """One run that ends by itself after ``seconds`` (SIGTERM path);
        returns how many records it emitted."""
        p = self._spawn("--exit-after", str(seconds))
        rc = p.wait(timeout=seconds + 120)
        text = open(os.path.join(self.log_dir, f"observe-{self.runs}.log"), errors="replace").read()
        assert rc == 0, text[-3000:]
        last = [line for line in text.splitlines() if " record(s), " in line][-1]
        return int(last.split(": ", 1)[1].split()[0])

    def catch_up(self, seconds=2, most=60):
        """Clean runs until one finds nothing new: everything is stored."""
        for _ in range(most):
            if self.run_clean(seconds) == 0:
                return
        raise AssertionError(f"the observer did not catch up in {most} runs")

    def enough(self, kills=6, at_least_s=10.0, at_most_s=240.0):
        """Whether the workload may end: enough kills, or too long already."""
        if self._t0 is None:
            self._t0 = time.monotonic()
        t = time.monotonic() - self._t0
        return (self.kills >= kills and t >= at_least_s) or t >= at_most_s

    def start_killing(self):
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _started(self, p, timeout=120):
        """Waits until run p observes (its start line); False if it ended first."""
        log = os.path.join(self.log_dir, f"observe-{self.runs}.log")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and p.poll() is None:
            with open(log, "rb") as f:
                if b"stops it" in f.read():
                    return True
            time.sleep(0.02)
        return False

    def _loop(self):
        while not self._stop.is_set():
            p = self._spawn()
            if self.kills % 3 == 2 or self._started(p):   # most kills while it observes
                self._stop.wait(self.rng.uniform(self.min_s, self.max_s))
            if self.kills % 2 == 0:
                os.kill(p.pid, signal.SIGKILL)             # the observer alone
            else:
                os.killpg(p.pid, signal.SIGKILL)           # it and its leader process
            p.wait()
            self.kills += 1

    def stop_killing(self):
        self._stop.set()
        self._thread.join(timeout=120)


def recover_all(env, shm_dir, timeout=120):
    """Drains what killed runs left: waits for orphaned leader processes,
    then `flowcept recover`s every job that still has rings."""
    base = os.path.join(shm_dir, f"flowcept-{os.geteuid()}")
    deadline = time.monotonic() + timeout
    while True:
        left = sorted(glob.glob(os.path.join(base, "*", "*.ring")))
        left = [p for p in left if os.path.basename(os.path.dirname(p)) != "adapter-pins"]
        if not left:
            return
        assert time.monotonic() < deadline, f"rings left after {timeout} s: {left}"
        for job in sorted({os.path.basename(os.path.dirname(p)) for p in left}):
            subprocess.run([sys.executable, "-m", "flowcept", "recover", job], env=env,
                           capture_output=True, timeout=120)
        time.sleep(0.5)


def stored_tasks(run_dir, prefix):
    from flowcept.query.tasks import read_tasks
    return [t for t in read_tasks(run_dir) if str(t.get("activity_id", "")).startswith(prefix)]
