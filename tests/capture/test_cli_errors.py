"""The CLI prints one-line errors that name the right command, never a
traceback; a closed output pipe ends it quietly."""
import os
import subprocess
import sys

import pytest

from flowcept import Flowcept, flowcept_task

pytest.importorskip("h5py")


def flowcept_cli(*args, env=None, cwd=None, stdin=None):
    return subprocess.run([sys.executable, "-m", "flowcept", *args], capture_output=True,
                          text=True, timeout=120, env=env or os.environ, cwd=cwd)


@pytest.fixture
def archive(tmp_path, run_dir, monkeypatch):
    monkeypatch.setenv("FLOWCEPT_JOB_ID", "j1")

    @flowcept_task
    def f(x):
        return x

    with Flowcept():
        for i in range(3000):
            f(i)
    out = tmp_path / "job.h5"
    r = flowcept_cli("compact", os.path.join(run_dir, "j1"), "-o", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    return str(out)


def one_line_error(r, command):
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"flowcept {command}: error: ")
    return lines[0]


def test_report_into_a_closed_pipe_is_quiet(archive):
    p = subprocess.Popen([sys.executable, "-m", "flowcept", "report", archive, "--no-plots",
                          "--top", "3000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.read(20)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) in (0, 141) and "Traceback" not in err and "BrokenPipe" not in err


def test_report_of_a_directory_names_summary_and_compact(run_dir, archive):
    line = one_line_error(flowcept_cli("report", run_dir), "report")
    assert "flowcept compact" in line and "flowcept summary" in line


def test_summary_of_an_archive_names_report(archive):
    line = one_line_error(flowcept_cli("summary", archive), "summary")
    assert f"flowcept report {archive}" in line


def test_compact_onto_an_existing_archive_names_overwrite(run_dir, archive):
    r = flowcept_cli("compact", os.path.join(run_dir, "j1"), "-o", archive, "--no-append",
                     "--no-progress")
    assert "--overwrite" in one_line_error(r, "compact")


@pytest.mark.parametrize("content", [b"hello\n", None])
def test_compact_onto_a_foreign_file_names_overwrite(run_dir, archive, tmp_path, content):
    target = tmp_path / "foreign.h5"
    if content is None:
        import h5py
        with h5py.File(target, "w") as f:
            f.create_dataset("x", data=[1])
    else:
        target.write_bytes(content)
    r = flowcept_cli("compact", os.path.join(run_dir, "j1"), "-o", str(target), "--no-progress")
    assert "--overwrite" in one_line_error(r, "compact")


def test_prolog_outside_slurm_names_prolog(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    line = one_line_error(flowcept_cli("prolog", env=env, cwd=str(tmp_path)), "prolog")
    assert "flowcept prolog" in line and "TaskProlog" in line and "Epilog" not in line


def test_missing_paths_and_bad_config_are_one_line(tmp_path):
    one_line_error(flowcept_cli("summary", str(tmp_path / "nothing")), "summary")
    one_line_error(flowcept_cli("report", str(tmp_path / "nothing.h5")), "report")
    env = dict(os.environ, FLOWCEPT_RING_BYTES="abc")
    assert "ring_bytes" in one_line_error(flowcept_cli("config", env=env), "config")


def test_unknown_variables_warn_in_one_line(tmp_path):
    env = dict(os.environ, FLOWCEPT_RNG_BYTES="1")
    r = flowcept_cli("config", env=env)
    assert r.returncode == 0 and "Traceback" not in r.stderr
    warns = [ln for ln in r.stderr.splitlines() if "FLOWCEPT_RNG_BYTES" in ln]
    assert len(warns) == 1 and warns[0].startswith("flowcept: warning: ")
    assert "ring_bytes" in warns[0]
