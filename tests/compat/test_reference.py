"""Field by field, what this package stores for a Flowcept program is what
Flowcept 1.0.3 stores (tests/compat/reference.py), apart from the fields we
add and the differences docs/compatibility.md lists.  Needs Flowcept 1.0.3 in
its own venv, named by FLOWCEPT_REF_VENV (skipped without)."""
import os
import re

import pytest

from compat import reference

REF = os.environ.get("FLOWCEPT_REF_VENV")
pytestmark = pytest.mark.skipif(not REF, reason="FLOWCEPT_REF_VENV names no venv with "
                                "flowcept==1.0.3 (python -m venv V && V/bin/pip install "
                                "flowcept==1.0.3 pandas psutil py-cpuinfo)")

# Fields we add to every document (docs/compatibility.md, "Documents").
OURS = {"rank", "thread_id", "start_ns", "end_ns", "job", "utc_timestamp", "hostname", "user",
        "pid", "flowcept_version", "type", "campaign_id", "started_at", "ended_at",
        "telemetry_at_start", "telemetry_at_end"}
# Known differences (docs/compatibility.md): a method's `self` is left out of used; a
# loop iteration without a parent has no parent_task_id field (Flowcept writes null).
KNOWN = (r"task:fit\.used: 1\.0\.3 \{'self'", r"task:\w+_iteration\.parent_task_id: missing")


def test_documents_match_flowcept_103(tmp_path):
    python = os.path.join(REF, "bin", "python")
    ref = reference.run_program(python, tmp_path / "reference")
    ours = reference.run_program(os.sys.executable, tmp_path / "ours")
    diffs = reference.compare(ref, ours)
    unexpected = [d for d in diffs
                  if not (re.match(r"^[\w:]+\.(\w+): extra here", d)
                          and re.match(r"^[\w:]+\.(\w+):", d).group(1) in OURS)
                  and not any(re.match(k, d) for k in KNOWN)]
    assert not unexpected, "\n".join(unexpected)
