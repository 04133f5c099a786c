"""Flowcept's CLI verbs through ``flowcept compat`` (registered the way the
top CLI registers its subcommands)."""
import argparse
import json
import uuid

import pytest

from flowcept import Flowcept, flowcept_task
from flowcept.compat import cli


def run(argv, capsys):
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="command")
    cli.register(sub)
    args = ap.parse_args(["compat"] + argv)
    rc = args.func(args)
    return rc, capsys.readouterr()


@pytest.fixture
def workflow(run_dir):
    @flowcept_task
    def f(x):
        return x

    wid = str(uuid.uuid4())
    with Flowcept(workflow_id=wid):
        f(1)
        f(2)
    return wid


def test_query_get_task_and_count(workflow, run_dir, capsys):
    rc, out = run(["--query", '{"used.x": 2}', "--run-dir", run_dir], capsys)
    (doc,) = [json.loads(line) for line in out.out.splitlines()]
    assert rc == 0 and doc["workflow_id"] == workflow and doc["used"] == {"x": 2}
    rc, out = run(["--get-task", doc["task_id"]], capsys)
    assert rc == 0 and json.loads(out.out)["task_id"] == doc["task_id"]
    rc, out = run(["--get-task", "nope"], capsys)
    assert rc == 1 and "no task nope" in out.err
    rc, out = run(["--workflow-count", workflow], capsys)
    assert json.loads(out.out) == {"workflow_id": workflow, "tasks": 2, "workflows": 1, "objects": 0}
    with pytest.raises(ValueError, match="JSON filter"):
        run(["--query", "{bad"], capsys)


def test_version_settings_and_init(tmp_path, capsys):
    from flowcept import __version__
    assert run(["--version"], capsys)[1].out.strip() == __version__
    rc, out = run(["--show-settings"], capsys)
    assert rc == 0 and "run_dir = " in out.out and "settings file:" in out.out
    target = tmp_path / "settings.yaml"
    rc, out = run(["--init-settings", "--settings-file", str(target)], capsys)
    assert rc == 0 and target.exists()
    pytest.importorskip("yaml")
    from flowcept.config import load_config
    assert load_config(str(target)).enabled is True   # the template reads back cleanly
    with pytest.raises(FileExistsError):
        run(["--init-settings", "--settings-file", str(target)], capsys)
