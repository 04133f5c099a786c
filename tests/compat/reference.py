"""What Flowcept 1.0.3 and this package store for the same program, field by
field: the program below runs under each interpreter with the kit's offline
profile (its buffer file is the record of what was captured), and the
messages are compared by kind (workflow start and end, each activity's tasks)
as field names with value types, and values where they are deterministic.

    python tests/compat/reference.py /tmp/fc103/bin/python   # prints the differences

tests/compat/test_reference.py runs it when FLOWCEPT_REF_VENV names a venv
with flowcept==1.0.3 (python -m venv /tmp/fc103 && /tmp/fc103/bin/pip install
flowcept==1.0.3 ...).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

try:   # run as tests/compat/reference.py, or imported with tests/ on the path
    from compat import conformance
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from compat import conformance

PROGRAM = r'''
import argparse, json, sys
from flowcept import Flowcept, FlowceptTask, FlowceptLoop, flowcept_task
from flowcept.instrumentation.flowcept_loop import FlowceptLightweightLoop

@flowcept_task(output_names="z")
def with_default(x, y=10):
    return x + y

@flowcept_task
def returns_dict(x):
    return {"y": x}

@flowcept_task(output_names=["q", "r"], tags=["t"], custom_metadata={"k": 1})
def two_outputs(a, b):
    return divmod(a, b)

@flowcept_task
def positional(x):
    return x * 2

@flowcept_task
def with_namespace(known):
    return None

class Model:
    @flowcept_task
    def fit(self, epochs):
        return epochs

f = Flowcept(workflow_name="reference", workflow_args={"n": 1}, start_persistence=False)
f.start()
with_default(1)
returns_dict(x=2)
two_outputs(7, 2)
positional(3)
with_namespace(argparse.Namespace(a=1, b="s"))
Model().fit(2)
with FlowceptTask(activity_id="explicit", used={"a": 1}, custom_metadata={"o": object()},
                  subtype="sub", tags=["x"]) as t:
    t.end(generated={"b": 2})
FlowceptTask(activity_id="message", used={"m": 1}).send()
loop = FlowceptLoop(range(2), loop_name="epochs", item_name="epoch")
for e in loop:
    loop.end_iter({"loss": 0.5})
light = FlowceptLightweightLoop(range(2), loop_name="light", item_name="k")
for k in light:
    light.end_iter({"v": k})
f.stop()
'''

# values that differ run to run, compared by type only
VOLATILE = {"task_id", "workflow_id", "campaign_id", "parent_task_id", "started_at", "ended_at",
            "utc_timestamp", "registered_at", "hostname", "user", "login_name", "node_name",
            "group_id", "interceptor_ids", "flowcept_version", "telemetry_at_start",
            "telemetry_at_end", "pid", "job", "start_ns", "end_ns", "thread_id", "rank"}


def run_program(python: str, workdir: Path) -> List[dict]:
    """The buffer file messages one interpreter writes for PROGRAM."""
    run = conformance.Run(workdir, "offline", python)
    script = workdir / "program.py"
    script.write_text(PROGRAM)
    out = workdir / "run"
    out.mkdir()
    r = subprocess.run([python, str(script)], cwd=out, env=run.env, capture_output=True,
                       text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"{python}: the reference program failed\n{r.stdout[-2000:]}"
                           f"{r.stderr[-3000:]}")
    msgs = []
    for p in sorted(out.glob("flowcept_buffer*.jsonl")):
        msgs.extend(json.loads(line) for line in p.read_text().splitlines() if line.strip())
    return msgs


def _kind(m: dict) -> str:
    if m.get("type") == "workflow":
        return "workflow:" + ("end" if "ended_at" in m else "start")
    return f"task:{m.get('activity_id')}"


def _shape(value):
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in sorted(value.items())}
    return type(value).__name__


def _no_ids(value):
    """Values with Flowcept's object ids (``<Class>_instance_id_<id>``) made equal."""
    if isinstance(value, dict):
        return {k: _no_ids(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_ids(v) for v in value]
    if isinstance(value, str) and "_instance_id_" in value:
        return value.split("_instance_id_")[0] + "_instance_id_<id>"
    return value


def describe(msgs: List[dict]) -> Dict[str, Tuple[int, dict]]:
    """kind -> (how many, the first message with volatile values as types)."""
    out: Dict[str, Tuple[int, dict]] = {}
    for m in msgs:
        k = _kind(m)
        n, first = out.get(k, (0, None))
        if first is None:
            first = {f: (_shape(v) if f in VOLATILE else _no_ids(v)) for f, v in m.items()}
        out[k] = (n + 1, first)
    return out


def compare(reference: List[dict], ours: List[dict]) -> List[str]:
    """The differences, one line each: kinds missing or extra, counts, fields
    missing, extra or different."""
    a, b = describe(reference), describe(ours)
    lines = []
    for kind in sorted(set(a) | set(b)):
        if kind not in b:
            lines.append(f"{kind}: only in 1.0.3 ({a[kind][0]}x)")
            continue
        if kind not in a:
            lines.append(f"{kind}: only here ({b[kind][0]}x)")
            continue
        (na, da), (nb, db) = a[kind], b[kind]
        if na != nb:
            lines.append(f"{kind}: {na} message(s) in 1.0.3, {nb} here")
        for f in sorted(set(da) | set(db)):
            if f not in db:
                lines.append(f"{kind}.{f}: missing here (1.0.3: {da[f]!r})")
            elif f not in da:
                lines.append(f"{kind}.{f}: extra here ({db[f]!r})")
            elif da[f] != db[f]:
                lines.append(f"{kind}.{f}: 1.0.3 {da[f]!r}, here {db[f]!r}")
    return lines


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as d:
        ref = run_program(argv[0], Path(d) / "reference")
        ours = run_program(sys.executable, Path(d) / "ours")
    for line in compare(ref, ours):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
