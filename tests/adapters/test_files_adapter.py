"""Files adapter on a real directory: watchdog (inotify) and polling mode."""
import os
import time

import pytest
from adapters_support import read_back

from flowcept.adapters.files import FilesAdapter, generated_by

pytest.importorskip("watchdog", reason="watchdog not installed: pip install 'flowcept[files]'")


def _settle(a, want, timeout=10):
    """Polls until the adapter emitted ``want`` records (events arrive asynchronously)."""
    deadline = time.monotonic() + timeout
    while a.emitted < want and time.monotonic() < deadline:
        time.sleep(0.1)
        a.poll()
    time.sleep(0.2)
    a.poll()
    return a.emitted


@pytest.mark.parametrize("mode", ["inotify", "polling"])
def test_events_exactly_once_across_restart(run_dir, session, tmp_path, mode):
    d = tmp_path / "data"
    (d / "sub").mkdir(parents=True)
    (d / "old.txt").write_text("baseline")          # existing before the first start: baseline
    ck = str(tmp_path / "files.ckpt")
    a = FilesAdapter(session, paths=str(d), mode=mode, hash="sha256", checkpoint=ck).start()
    for i in range(5):
        (d / "sub" / f"f{i}.dat").write_bytes(b"x" * (100 + i))
    assert _settle(a, 5) == 5
    (d / "sub" / "f0.dat").write_bytes(b"y" * 7)      # modified
    os.rename(d / "sub" / "f1.dat", d / "moved.dat")  # moved
    os.unlink(d / "sub" / "f2.dat")                   # deleted
    assert _settle(a, 8) == 8
    a.stop()

    # while no adapter runs: one created, one modified, one deleted
    (d / "later.txt").write_text("later")
    time.sleep(0.01)
    (d / "sub" / "f3.dat").write_bytes(b"z" * 3)
    os.unlink(d / "sub" / "f4.dat")
    b = FilesAdapter(session, paths=str(d), mode=mode, hash="sha256", checkpoint=ck).start()
    assert _settle(b, 3) == 3
    b.stop()
    c = FilesAdapter(session, paths=str(d), mode=mode, checkpoint=ck).start()
    c.poll()
    c.stop()
    assert c.emitted == 0

    tasks = read_back(run_dir, "file:")
    events = sorted((t["activity_id"], os.path.basename(t["generated"]["path"])) for t in tasks)
    assert events == sorted([("file:created", f"f{i}.dat") for i in range(5)] + [
        ("file:modified", "f0.dat"), ("file:moved", "moved.dat"), ("file:deleted", "f2.dat"),
        ("file:created", "later.txt"), ("file:modified", "f3.dat"), ("file:deleted", "f4.dat")])
    f0 = next(t for t in tasks if t["activity_id"] == "file:modified"
              and t["generated"]["path"].endswith("f0.dat"))
    import hashlib
    assert f0["generated"]["size"] == 7
    assert f0["generated"]["sha256"] == hashlib.sha256(b"y" * 7).hexdigest()
    mv = next(t for t in tasks if t["activity_id"] == "file:moved")
    assert mv["generated"]["moved_from"].endswith(os.path.join("sub", "f1.dat"))
    assert len({t["task_id"] for t in tasks}) == len(tasks)


def test_file_written_during_a_captured_task_is_linked(run_dir, session, tmp_path):
    from flowcept import flowcept_task
    from flowcept.query.tasks import read_tasks
    d = tmp_path / "out"
    d.mkdir()
    a = FilesAdapter(session, paths=str(d), checkpoint=str(tmp_path / "ck")).start(background=True)

    @flowcept_task
    def simulate(n):
        (d / "result.bin").write_bytes(b"r" * n)
        return n

    time.sleep(0.05)
    simulate(n=64)
    time.sleep(0.05)
    (d / "outside.txt").write_text("not from a task")
    deadline = time.monotonic() + 10
    while a.emitted < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    a.stop()
    read_back(run_dir)
    tasks = read_tasks(run_dir)
    files = [t for t in tasks if t["activity_id"].startswith("file:")]
    sim = next(t for t in tasks if t["activity_id"].endswith("simulate"))
    links = generated_by(tasks, files)
    res = next(f for f in files if f["generated"]["path"].endswith("result.bin"))
    out = next(f for f in files if f["generated"]["path"].endswith("outside.txt"))
    assert links[res["task_id"]] == sim["task_id"]
    assert out["task_id"] not in links
