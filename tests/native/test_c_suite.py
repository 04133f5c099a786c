"""Runs the C test-suite (csrc/tests) as built by csrc/Makefile: plain,
under AddressSanitizer and under ThreadSanitizer, plus the C example."""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CSRC = os.path.join(ROOT, "csrc")

pytestmark = pytest.mark.skipif(shutil.which("make") is None or shutil.which("gcc") is None,
                                reason="make and gcc are needed to build the C tests")


def run_make(*targets, sanitize=None, timeout=600):
    cmd = ["make", "-C", CSRC, *targets]
    if sanitize:
        cmd.append(f"SANITIZE={sanitize}")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    return text


@pytest.mark.parametrize("sanitize", [None, "address", "thread"])
def test_c_suite(sanitize):
    text = run_make("test", sanitize=sanitize)
    lines = [line for line in text.splitlines() if line.strip().endswith("0 failed")]
    assert lines, text[-2000:]
    assert "warning:" not in text   # -Wall -Wextra clean (and -Werror in the Makefile)


def test_c_example_builds_and_runs():
    text = run_make("example")
    assert "records" in text.lower(), text[-2000:]
