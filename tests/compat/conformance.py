"""Runs Flowcept 1.0.3's own tests and examples (the conformance kit in
``../shared/conformance/flowcept-1.0.3``) against an installed package, by the
kit README's rules: a temporary copy of the kit, ``HOME`` a fresh directory
holding ``.flowcept/settings.yaml`` (the profile), the kit's pytest command;
a test passes when pytest prints ``PASSED <id>``, an example when it exits 0
and its output has no ``Traceback``, ``ERROR`` or ``Error:``.

Used by tests/compat/test_conformance.py, and by hand to compare with the
reference (any interpreter, e.g. a venv with flowcept==1.0.3)::

    python tests/compat/conformance.py offline [--python /tmp/fc103/bin/python]
    python tests/compat/conformance.py online  [--python ...]   # starts a redis-server
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[2]
KIT_ENV = "FLOWCEPT_CONFORMANCE_KIT"
PYTEST_ARGS = ("-p", "no:cacheprovider", "-q", "-rA", "--timeout=300")
OFFLINE_EXAMPLES = ("start_here.py", "instrumented_simple_example.py",
                    "instrumented_loop_example.py", "convergence_loop_example.py")
ONLINE_EXAMPLES = ("instrumented_simple_example.py", "instrumented_loop_example.py",
                   "convergence_loop_example.py")
# Environment variables a Flowcept program reads (its configs.py and ours): a
# run sees only the profile, never the caller's settings.
_SCRUB = re.compile(r"^(FLOWCEPT_|MQ_|KVDB_|MONGO_|LMDB_|DB_FLUSH_MODE$|DUMP_BUFFER$|"
                    r"TELEMETRY_ENABLED$|AGENT_|WEBSERVER_|PYTEST_)")
_OUTCOME = re.compile(r"^(PASSED|FAILED|ERROR|XPASS|XFAIL) (tests/\S+)")
_EXAMPLE_FAILURE = re.compile(r"Traceback|ERROR|Error:")


def kit_dir() -> Path:
    """The kit: $FLOWCEPT_CONFORMANCE_KIT, else ../shared/conformance/flowcept-1.0.3."""
    env = os.environ.get(KIT_ENV)
    return Path(env) if env else ROOT.parent / "shared" / "conformance" / "flowcept-1.0.3"


def offline_ids(kit: Optional[Path] = None) -> List[str]:
    kit = kit or kit_dir()
    return [line.strip() for line in (kit / "offline-test-ids.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]


class Run:
    """A temporary copy of the kit and a HOME holding one profile."""

    def __init__(self, workdir: Path, profile: str, python: str = sys.executable,
                 redis_port: Optional[int] = None, mongo_port: Optional[int] = None):
        self.workdir = Path(workdir)
        self.python = python
        src = kit_dir()
        if not (src / "tests").is_dir():
            raise FileNotFoundError(f"no conformance kit at {src}: set {KIT_ENV}")
        self.kit = self.workdir / "kit"
        shutil.copytree(src, self.kit)
        self.home = self.workdir / "home"
        (self.home / ".flowcept").mkdir(parents=True)
        text = (src / f"{profile}-settings.yaml").read_text()
        text = text.replace("@REDIS_PORT@", str(redis_port or 6379))
        text = text.replace("@MONGO_PORT@", str(mongo_port or 27017))
        (self.home / ".flowcept" / "settings.yaml").write_text(text)
        self.env = {k: v for k, v in os.environ.items() if not _SCRUB.match(k)}
        self.env["HOME"] = str(self.home)
        self.env.pop("PYTHONPATH", None)

    def pytest(self, targets: Sequence[str], timeout: float = 1800) -> Dict[str, str]:
        """{test id: PASSED | FAILED | ERROR | ...} of one pytest run over targets
        (skipped tests print no id and are absent); ``self.last_output`` keeps
        the run's output."""
        cmd = [self.python, "-m", "pytest", *PYTEST_ARGS, *targets]
        t0 = time.monotonic()
        r = subprocess.run(cmd, cwd=self.kit, env=self.env, capture_output=True, text=True,
                           timeout=timeout)
        self.last_seconds = time.monotonic() - t0
        self.last_output = r.stdout + r.stderr
        out: Dict[str, str] = {}
        for line in r.stdout.splitlines():
            m = _OUTCOME.match(line)
            if m:
                out.setdefault(m.group(2), m.group(1))
        return out

    def example(self, name: str, timeout: float = 300):
        """(passed, output, seconds) of one example run in its own empty directory."""
        cwd = self.workdir / f"example-{Path(name).stem}"
        cwd.mkdir()
        t0 = time.monotonic()
        try:
            r = subprocess.run([self.python, str(self.kit / "examples" / name)], cwd=cwd,
                               env=self.env, capture_output=True, text=True, timeout=timeout)
            output, rc = r.stdout + r.stderr, r.returncode
        except subprocess.TimeoutExpired as e:
            output, rc = f"timed out after {timeout}s\n{e.stdout or ''}{e.stderr or ''}", -1
        ok = rc == 0 and not _EXAMPLE_FAILURE.search(output)
        return ok, output, time.monotonic() - t0


def _main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("profile", choices=("offline", "online"))
    p.add_argument("--python", default=sys.executable, help="interpreter of the package under test")
    p.add_argument("--one-per-id", action="store_true",
                   help="offline: one pytest run per listed id (the README's form)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    a = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix=f"conformance-{a.profile}-"))
    server = None
    report: dict = {"profile": a.profile, "python": a.python}
    try:
        if a.profile == "offline":
            run = Run(tmp, "offline", a.python)
            ids = offline_ids()
            if a.one_per_id:
                results: Dict[str, str] = {}
                t0 = time.monotonic()
                for i in ids:
                    results.update(run.pytest([i]))
                report["pytest_seconds"] = round(time.monotonic() - t0, 1)
            else:
                results = run.pytest(ids)
                report["pytest_seconds"] = round(run.last_seconds, 1)
            examples = OFFLINE_EXAMPLES
        else:
            sys.path.insert(0, str(ROOT / "tests" / "support"))
            from redis_server import RedisServer
            server = RedisServer(tmp / "redis")
            run = Run(tmp, "online-lmdb", a.python, redis_port=server.port)
            results = run.pytest(["tests"])
            report["pytest_seconds"] = round(run.last_seconds, 1)
            examples = ONLINE_EXAMPLES
        report["passed"] = sorted(k for k, v in results.items() if v == "PASSED")
        report["not_passed"] = {k: v for k, v in sorted(results.items()) if v != "PASSED"}
        report["examples"] = {}
        for name in examples:
            ok, output, secs = run.example(name)
            report["examples"][name] = {"passed": ok, "seconds": round(secs, 1)}
            if not ok:
                report["examples"][name]["output_tail"] = output[-1500:]
        if not results:
            report["pytest_output_tail"] = run.last_output[-3000:]
        print(json.dumps(report, indent=1))
        print(f"{len(report['passed'])} passed; examples "
              f"{sum(e['passed'] for e in report['examples'].values())}/{len(examples)}",
              file=sys.stderr)
    finally:
        if server is not None:
            server.close()
        if a.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
