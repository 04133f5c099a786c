"""`flowcept epilog` without SLURM: recovery of killed producers (rings + spill), refusal of
planted symlinks and foreign-owned files, the privilege drop to the job's user, the shell
wrapper's guarantees (exit 0, hard time bound), and MPI ranks SIGKILLed mid-run."""
import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LEFTOVER = Path(__file__).resolve().parent / "_leftover.py"
EPILOG_SH = ROOT / "slurm" / "flowcept-epilog.sh"
OTHER_UID = 12345

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, privilege drop)")


def leave_ring(job, rank, n, shm, runs, ring_bytes=None, ring_dir=None):
    """Runs a producer that pushes n tasks and SIGKILLs itself; returns its ring path."""
    env = dict(os.environ, FLOWCEPT_SHM_DIR=str(shm), FLOWCEPT_RUN_DIR=str(runs))
    if ring_dir:
        env["LEFTOVER_RING_DIR"] = str(ring_dir)
    argv = [sys.executable, str(LEFTOVER), str(job), str(rank), str(n)]
    if ring_bytes:
        argv.append(str(ring_bytes))
    p = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=60)
    assert p.returncode == -signal.SIGKILL, p.stderr
    path, pushed, spilled = p.stdout.split()
    return path, int(pushed.split("=")[1]), int(spilled.split("=")[1])


def run_epilog(job, uid, *args, gid=None, env_extra=None, timeout=60):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWCEPT_", "SLURM_"))}
    env.update(SLURM_JOB_ID=str(job), SLURM_JOB_UID=str(uid))
    if gid is not None:
        env["SLURM_JOB_GID"] = str(gid)
    env.update(env_extra or {})
    p = subprocess.run([sys.executable, "-m", "flowcept", "epilog", *map(str, args)], env=env,
                       cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout)
    return p.returncode, p.stderr


def _have_archive():
    try:
        import h5py  # noqa: F401
        from flowcept.archive import compact  # noqa: F401
    except ImportError:
        return False
    return True


def _proc_state(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


def count_records(path):
    from flowcept.query.tasks import read_records
    return len(read_records(str(path)))


def digest_tree(path):
    out = {}
    for p in sorted(Path(path).rglob("*")):
        st = p.lstat()
        out[str(p)] = (st.st_mode, st.st_uid, st.st_size, st.st_mtime_ns,
                       hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else None)
    return out


@pytest.fixture
def dirs(tmp_path):
    shm, runs = tmp_path / "shm", tmp_path / "runs"
    shm.mkdir(exist_ok=True)
    return shm, runs, tmp_path / "epilog.log"


# --------------------------------------------------------------------------- recovery


def test_recovers_killed_producers_rings_and_spill(dirs):
    shm, runs, logf = dirs
    uid = os.geteuid()
    p0, pushed0, spilled0 = leave_ring("4242", 0, 3000, shm, runs, ring_bytes=4096)
    p1, pushed1, spilled1 = leave_ring("4242", 1, 200, shm, runs)
    assert spilled0 > 0 and os.path.exists(p0 + ".spill")        # spill path exercised
    ring_dir = shm / f"flowcept-{uid}" / "4242"
    assert ring_dir.is_dir()
    rc, err = run_epilog("4242", uid, "--shm-dir", shm, "--run-dir", runs, "--log-file", logf)
    assert rc == 0, err
    assert count_records(runs / "4242") == 3000 + 200
    assert not ring_dir.exists()
    st = logf.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    text = logf.read_text()
    assert "recover: 3200 record(s) from 2 ring(s)" in text, text
    assert "done: exit 0" in text
    # idempotent: a second run finds nothing and stores nothing twice
    rc, err = run_epilog("4242", uid, "--shm-dir", shm, "--run-dir", runs, "--log-file", logf)
    assert rc == 0 and "nothing" in err
    assert count_records(runs / "4242") == 3200


def test_nothing_to_do_exits_zero(dirs):
    shm, runs, logf = dirs
    rc, err = run_epilog("999", os.geteuid(), "--shm-dir", shm, "--run-dir", runs)
    assert rc == 0, err
    assert "nothing: no rings left" in err
    assert not runs.exists()


def test_missing_job_env_is_a_usage_error(dirs):
    shm, runs, _ = dirs
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    p = subprocess.run([sys.executable, "-m", "flowcept", "epilog", "--shm-dir", str(shm)],
                       env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=60)
    assert p.returncode == 2 and "SLURM_JOB_ID" in p.stderr


def test_conf_file_and_templates(tmp_path, dirs):
    from flowcept.ops import epilog
    shm, runs, logf = dirs
    conf = tmp_path / "epilog.conf"
    conf.write_text(f"# site\nFLOWCEPT_EPILOG_SHM_DIR='{shm}'\nexport FLOWCEPT_EPILOG_RUN_DIR={tmp_path}/%u/%j\n"
                    "FLOWCEPT_EPILOG_COMPACT=yes # trailing comment\nFLOWCEPT_EPILOG_TIME_LIMIT=30\n")
    conf.chmod(0o600)
    s = epilog.settings_from(epilog.read_conf(str(conf)), {})
    assert s.shm_dir == str(shm) and s.compact is True and s.time_limit == 30.0
    ctx = epilog.JobContext(job="17", uid=1000, gid=1000, user="alice", work_dir="/w", home="/h")
    assert epilog.expand(s.run_dir, ctx) == f"{tmp_path}/alice/17"
    assert epilog.expand("%w/x/%U/%%%h", ctx) == "/w/x/1000/%/h"
    with pytest.raises(ValueError):
        epilog.expand("%q", ctx)
    with pytest.raises(ValueError):
        epilog.expand("%w", epilog.JobContext("17", 1000, 1000, "alice", "", "/h"))
    conf.chmod(0o666)
    from flowcept.ops.safefs import UnsafePathError
    with pytest.raises(UnsafePathError):
        epilog.read_conf(str(conf))
    link = tmp_path / "link.conf"
    link.symlink_to(conf)
    conf.chmod(0o600)
    with pytest.raises(UnsafePathError):
        epilog.read_conf(str(link))


def test_job_id_must_be_a_name(dirs):
    shm, runs, _ = dirs
    rc, err = run_epilog("../../etc", os.geteuid(), "--shm-dir", shm, "--run-dir", runs)
    assert rc == 2 and "not a job id" in err


# --------------------------------------------------------------------------- refusals


def test_symlinked_ring_dir_is_refused(tmp_path, dirs):
    shm, runs, logf = dirs
    uid = os.geteuid()
    # a valid-looking ring of "another" place, where the attacker points the job's ring dir
    elsewhere_shm = tmp_path / "elsewhere"
    elsewhere_shm.mkdir()
    target_ring, _, _ = leave_ring("555", 0, 50, elsewhere_shm, tmp_path / "other-runs")
    target_dir = Path(target_ring).parent
    before = digest_tree(elsewhere_shm)
    user_dir = shm / f"flowcept-{uid}"
    user_dir.mkdir(mode=0o700)
    (user_dir / "555").symlink_to(target_dir)
    rc, err = run_epilog("555", uid, "--shm-dir", shm, "--run-dir", runs, "--log-file", logf)
    assert rc == 1
    text = logf.read_text()
    assert "refused" in text and "symbolic link" in text, text
    assert digest_tree(elsewhere_shm) == before          # nothing read-modified or removed
    assert not (runs / "555").exists()                   # nothing written
    assert (user_dir / "555").is_symlink()               # the planted link itself left alone


def test_symlinked_user_dir_is_refused(tmp_path, dirs):
    shm, runs, logf = dirs
    uid = os.geteuid()
    elsewhere_shm = tmp_path / "elsewhere"
    elsewhere_shm.mkdir()
    leave_ring("556", 0, 20, elsewhere_shm, tmp_path / "other-runs")
    before = digest_tree(elsewhere_shm)
    (shm / f"flowcept-{uid}").symlink_to(elsewhere_shm / f"flowcept-{uid}")
    rc, _ = run_epilog("556", uid, "--shm-dir", shm, "--run-dir", runs, "--log-file", logf)
    assert rc == 1 and "symbolic link" in logf.read_text()
    assert digest_tree(elsewhere_shm) == before
    assert not (runs / "556").exists()


def test_symlinked_ring_file_is_refused_others_recovered(tmp_path, dirs):
    shm, runs, logf = dirs
    uid = os.geteuid()
    good, pushed, _ = leave_ring("557", 0, 40, shm, runs)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim, _, _ = leave_ring("999", 3, 30, elsewhere, tmp_path / "other-runs")
    before = digest_tree(elsewhere)
    ring_dir = Path(good).parent
    planted = ring_dir / "000003.1.ring"
    planted.symlink_to(victim)
    rc, _ = run_epilog("557", uid, "--shm-dir", shm, "--run-dir", runs, "--log-file", logf)
    text = logf.read_text()
    assert rc == 1 and "symbolic link" in text and "000003.1.ring" in text, text
    assert count_records(runs / "557") == 40           # the job's own ring was recovered
    assert digest_tree(elsewhere) == before
    assert planted.is_symlink() and ring_dir.is_dir()  # left for the admin, not followed


@needs_root
def test_foreign_owned_ring_and_spill_are_refused(tmp_path, dirs):
    shm, runs, logf = dirs
    uid = os.geteuid()
    good, _, _ = leave_ring("558", 0, 25, shm, runs)
    bad, _, spilled = leave_ring("558", 1, 2000, shm, runs, ring_bytes=4096)
    assert spilled
    os.chown(bad, OTHER_UID, OTHER_UID)                 # the ring: another user's file
    ring_dir = Path(good).parent
    before = digest_tree(ring_dir)
    # and a third ring whose spill file belongs to someone else
    third, _, spilled3 = leave_ring("558", 2, 2000, shm, runs, ring_bytes=4096)
    assert spilled3
    os.chown(third + ".spill", OTHER_UID, OTHER_UID)
    before_third = digest_tree(ring_dir)
    rc, _ = run_epilog("558", uid, "--shm-dir", shm, "--run-dir", runs, "--log-file", logf)
    text = logf.read_text()
    assert rc == 1
    assert f"owned by uid {OTHER_UID}, expected {uid}" in text, text
    assert os.path.basename(bad) in text and os.path.basename(third) in text
    assert count_records(runs / "558") == 25            # only the safe ring
    after = digest_tree(ring_dir)
    for path in (bad, third, third + ".spill"):
        assert after[path] == before_third[path]        # untouched
    assert before[bad] == after[bad]


def test_ring_naming_a_foreign_spill_file_is_refused(tmp_path, dirs):
    """A ring's header names its spill file; one naming a file elsewhere is not consumed."""
    shm, runs, logf = dirs
    uid = os.geteuid()
    other = tmp_path / "other"
    other.mkdir()
    # made in other/flowcept-<uid>/560, then moved into the job's place: its header still
    # names other/.../<ring>.spill (which is a valid spill file of records)
    path, pushed, spilled = leave_ring("560", 0, 1000, other, runs, ring_bytes=4096)
    assert spilled
    (shm / f"flowcept-{uid}").mkdir(mode=0o700)
    os.rename(Path(path).parent, shm / f"flowcept-{uid}" / "560")
    Path(path).parent.mkdir(mode=0o700)
    os.rename(shm / f"flowcept-{uid}" / "560" / (Path(path).name + ".spill"), path + ".spill")
    before = digest_tree(other)
    rc, _ = run_epilog("560", uid, "--shm-dir", shm, "--run-dir", runs, "--log-file", logf)
    text = logf.read_text()
    assert rc == 1 and "its header names spill file" in text, text
    assert digest_tree(other) == before
    assert not (runs / "560").exists()


@needs_root
def test_foreign_owned_ring_dir_is_refused(dirs):
    shm, runs, logf = dirs
    uid = os.geteuid()
    good, _, _ = leave_ring("559", 0, 10, shm, runs)
    ring_dir = Path(good).parent
    os.chown(ring_dir, OTHER_UID, OTHER_UID)
    before = digest_tree(ring_dir)
    rc, _ = run_epilog("559", uid, "--shm-dir", shm, "--run-dir", runs, "--log-file", logf)
    assert rc == 1 and f"owned by uid {OTHER_UID}" in logf.read_text()
    assert digest_tree(ring_dir) == before
    assert not (runs / "559").exists()


# --------------------------------------------------------------------------- privilege drop


def _traversable_tmp() -> str:
    for d in ("/tmp", "/var/tmp", "/dev/shm"):
        parts = Path(d).resolve().parts
        paths = [Path(*parts[:i + 1]) for i in range(len(parts))]
        if all(p.is_dir() and p.stat().st_mode & 0o001 for p in paths):
            return d
    pytest.fail("no temporary directory others may traverse (/tmp, /var/tmp, /dev/shm): "
                "chmod 1777 /tmp")


@pytest.fixture
def user_base():
    """A directory tree the unprivileged OTHER_UID can reach: a world-traversable
    temporary directory (/tmp, else /var/tmp or /dev/shm: some sandboxes make
    /tmp 0700) / base (its own)."""
    base = Path(tempfile.mkdtemp(prefix="fc-epilog-user-", dir=_traversable_tmp()))
    os.chown(base, OTHER_UID, OTHER_UID)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _chown_tree(path, uid, gid):
    os.chown(path, uid, gid)
    for p in Path(path).rglob("*"):
        os.chown(p, uid, gid, follow_symlinks=False)


def _prepare_user_job(base, job, n_rings=2):
    """Rings of a killed job of OTHER_UID under base/shm (made as root, then chowned)."""
    shm, runs = base / "shm", base / "runs"
    shm.mkdir()
    total = 0
    for rank in range(n_rings):
        _, pushed, spilled = leave_ring(job, rank, 500 * (rank + 1), shm, runs, ring_bytes=4096,
                                        ring_dir=shm / f"flowcept-{OTHER_UID}" / job)
        total += pushed + spilled
    _chown_tree(shm, OTHER_UID, OTHER_UID)
    return shm, runs, total


@needs_root
def test_privilege_drop_reads_and_writes_only_as_the_user(user_base, tmp_path):
    shm, runs, total = _prepare_user_job(user_base, "6001")
    runs.mkdir(mode=0o700)
    os.chown(runs, OTHER_UID, OTHER_UID)
    logf = tmp_path / "root.log"           # the root parent's log: the user could not write it
    compact = _have_archive()
    rc, err = run_epilog("6001", OTHER_UID, "--shm-dir", shm, "--run-dir", runs,
                         "--log-file", logf, "--compact", "yes" if compact else "no",
                         gid=OTHER_UID)
    text = logf.read_text()
    assert rc == 0, text + err
    assert f"dropped to uid {OTHER_UID} gid {OTHER_UID}" in text
    assert count_records(runs / "6001") == total == 1500
    assert not (shm / f"flowcept-{OTHER_UID}" / "6001").exists()
    owners = {p.lstat().st_uid for p in runs.rglob("*")}
    assert owners == {OTHER_UID}, owners   # every file the epilog wrote belongs to the user
    if compact:
        h5 = runs / "6001.h5"
        assert "compact:" in text and h5.is_file(), text
        assert stat.S_IMODE(h5.stat().st_mode) & 0o077 == 0
    st = logf.stat()
    assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o600


@needs_root
def test_privilege_drop_cannot_write_where_the_user_cannot(user_base, tmp_path):
    """The run dir belongs to root (0755): root could write there, the job's user cannot; the
    epilog must fail (logged), leaving the rings for later, rather than write as root."""
    shm, runs, total = _prepare_user_job(user_base, "6002", n_rings=1)
    runs.mkdir(mode=0o755)                  # root-owned
    logf = tmp_path / "root.log"
    rc, _ = run_epilog("6002", OTHER_UID, "--shm-dir", shm, "--run-dir", runs,
                       "--log-file", logf, gid=OTHER_UID)
    text = logf.read_text()
    assert rc == 1 and "PermissionError" in text, text
    assert not (runs / "6002").exists()
    assert (shm / f"flowcept-{OTHER_UID}" / "6002").is_dir()   # rings kept for a later run


@needs_root
def test_privilege_drop_refuses_root_file_planted_in_user_dir(user_base, tmp_path):
    shm, runs, total = _prepare_user_job(user_base, "6003", n_rings=1)
    runs.mkdir(mode=0o700)
    os.chown(runs, OTHER_UID, OTHER_UID)
    ring_dir = shm / f"flowcept-{OTHER_UID}" / "6003"
    planted = ring_dir / "000007.99.ring"
    shutil.copy(next(ring_dir.glob("*.ring")), planted)    # owned by root, valid-looking
    planted.chmod(0o644)
    before = digest_tree(ring_dir)[str(planted)]
    logf = tmp_path / "root.log"
    rc, _ = run_epilog("6003", OTHER_UID, "--shm-dir", shm, "--run-dir", runs,
                       "--log-file", logf, gid=OTHER_UID)
    text = logf.read_text()
    assert rc == 1 and "owned by uid 0, expected 12345" in text, text
    assert count_records(runs / "6003") == total
    assert digest_tree(ring_dir)[str(planted)] == before


@needs_root
def test_not_root_and_not_the_jobs_user_is_refused(dirs):
    """Run unprivileged for someone else's job: refused without touching anything."""
    shm, runs, _ = dirs
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWCEPT_", "SLURM_"))}
    env.update(SLURM_JOB_ID="1", SLURM_JOB_UID="0")
    p = subprocess.run([sys.executable, "-c",
                        "import os,sys; from flowcept.ops import epilog;"
                        f"os.setgid({OTHER_UID}); os.setuid({OTHER_UID});"
                        "sys.exit(epilog.run_epilog(epilog.EpilogSettings(shm_dir='/nonexistent')))"],
                       env=env, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=60)
    assert p.returncode == 1 and "not root, and the job is not ours" in p.stderr


# --------------------------------------------------------------------------- the shell wrapper


def _conf(tmp_path, **keys):
    conf = tmp_path / "epilog.conf"
    conf.write_text("".join(f"FLOWCEPT_EPILOG_{k.upper()}={v}\n" for k, v in keys.items()))
    conf.chmod(0o600)
    return conf


def _run_sh(conf, job, uid, timeout=60):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWCEPT_", "SLURM_"))}
    env.update(FLOWCEPT_EPILOG_CONF=str(conf), SLURM_JOB_ID=str(job), SLURM_JOB_UID=str(uid),
               SLURM_SCRIPT_CONTEXT="epilog_slurmd")
    t0 = time.monotonic()
    p = subprocess.run([str(EPILOG_SH)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=timeout)
    return p, time.monotonic() - t0


def test_shell_epilog_recovers_and_exits_zero(tmp_path, dirs):
    shm, runs, logf = dirs
    leave_ring("7001", 0, 100, shm, runs)
    conf = _conf(tmp_path, python=sys.executable, shm_dir=shm, run_dir=runs, log_file=logf)
    p, _ = _run_sh(conf, "7001", os.geteuid())
    assert p.returncode == 0, p.stderr
    assert count_records(runs / "7001") == 100
    assert "recover: 100 record(s)" in logf.read_text()


def test_shell_epilog_exits_zero_on_failure(tmp_path, dirs):
    shm, runs, logf = dirs
    conf = _conf(tmp_path, python=sys.executable, shm_dir=shm, run_dir=runs, log_file=logf)
    env_job = "../x"                      # rejected by flowcept epilog (exit 2)
    p, _ = _run_sh(conf, env_job, os.geteuid())
    assert p.returncode == 0
    assert "flowcept epilog exited 2" in logf.read_text()


def test_shell_epilog_hard_time_bound(tmp_path, dirs):
    shm, runs, logf = dirs
    fake = tmp_path / "fakepython"
    fake.write_text("#!/bin/sh\nexec sleep 300\n")
    fake.chmod(0o755)
    conf = _conf(tmp_path, python=fake, shm_dir=shm, run_dir=runs, log_file=logf, time_limit=1)
    p, elapsed = _run_sh(conf, "7002", os.geteuid(), timeout=60)
    assert p.returncode == 0
    assert elapsed < 30, elapsed          # 1 s limit + 10 s grace (+5 s kill)
    assert "killed after 11 s" in logf.read_text()


def test_shell_epilog_refuses_writable_conf(tmp_path, dirs):
    shm, runs, logf = dirs
    conf = _conf(tmp_path, python=sys.executable, shm_dir=shm, run_dir=runs, log_file=logf)
    conf.chmod(0o666)
    p, _ = _run_sh(conf, "7003", os.geteuid())
    assert p.returncode == 0 and "writable by group/others" in p.stderr
    assert not logf.exists()


def test_python_side_time_limit_kills_the_worker(monkeypatch, dirs):
    """The worker is killed at the time limit (a hung file system must not hang the node)."""
    from flowcept.ops import epilog
    shm, runs, logf = dirs
    monkeypatch.setattr(epilog, "do_job", lambda *a, **k: time.sleep(60))
    settings = epilog.EpilogSettings(shm_dir=str(shm), run_dir=str(runs), time_limit=1.0,
                                     log_file=str(logf))
    t0 = time.monotonic()
    rc = epilog.run_epilog(settings, env={"SLURM_JOB_ID": "8001", "SLURM_JOB_UID": str(os.geteuid())})
    assert rc == 1 and time.monotonic() - t0 < 10
    assert "timeout: work not finished within 1 s, killed" in logf.read_text()


# --------------------------------------------------------------------------- MPI ranks SIGKILLed


@pytest.mark.mpi
@pytest.mark.timeout(180)
def test_mpi_ranks_sigkilled_then_epilog_recovers(tmp_path, dirs):
    if shutil.which("mpiexec") is None:
        pytest.skip("mpiexec not on PATH (pip install mpich mpi4py)")
    pytest.importorskip("mpi4py")
    shm, runs, logf = dirs
    uid = os.geteuid()
    job = "9101"
    env = dict(os.environ, FLOWCEPT_SHM_DIR=str(shm), FLOWCEPT_RUN_DIR=str(runs),
               FLOWCEPT_JOB_ID=job, FLOWCEPT_DRAIN_INTERVAL_MS="200")
    proc = subprocess.Popen(["mpiexec", "-n", "4", sys.executable, str(ROOT / "examples" / "heat2d.py"),
                             "--steps", "1000000", "--n", "64"], env=env, cwd=str(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    ring_dir = shm / f"flowcept-{uid}" / job
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rings = list(ring_dir.glob("*.ring")) if ring_dir.is_dir() else []
            if len(rings) == 4 and (runs / job / "store").is_dir():
                break
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.2)
        else:
            pytest.fail("the MPI run did not start capturing within 60 s")
        time.sleep(1.5)                               # records pile up in the rings
    finally:
        os.killpg(proc.pid, signal.SIGKILL)           # every rank and the leader, at once
        proc.wait(timeout=30)
    rings = sorted(ring_dir.glob("*.ring"))
    assert len(rings) == 4
    # As under SLURM, the epilog runs once the job's processes are gone: wait for the ranks
    # (hydra may have put them outside mpiexec's process group) and kill any that remain.
    pids = [int(p.name.split(".")[1]) for p in rings]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() and
                                              "Z" not in _proc_state(pid) for pid in pids):
        time.sleep(0.1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.1)                               # zombies: reaped by their parent
    before = count_records(runs / job) if (runs / job / "store").is_dir() else 0
    rc, err = run_epilog(job, uid, "--shm-dir", shm, "--run-dir", runs, "--log-file", logf)
    assert rc == 0, logf.read_text() + err
    assert not ring_dir.exists()
    from flowcept.query.tasks import read_tasks
    tasks = read_tasks(str(runs / job))
    assert len(tasks) > before
    # Rings are FIFO per rank: what survives is a prefix of each rank's pushes, no holes.
    for rank in range(4):
        steps = sorted(t["used"]["step"] for t in tasks
                       if t["rank"] == rank and t["activity_id"] == "exchange_halos")
        assert steps, f"rank {rank}: no records"
        assert steps == list(range(len(steps))), f"rank {rank}: holes in {steps[:5]}..."
        n_ts = sum(1 for t in tasks if t["rank"] == rank and t["activity_id"] == "timestep")
        assert len(steps) - 1 <= n_ts <= len(steps)


def test_node_count_and_multi_node_compaction_is_deferred(dirs):
    from flowcept.ops.epilog import _node_count
    assert _node_count({}) == 1
    assert _node_count({"SLURM_JOB_NODELIST": "localhost"}) == 1
    assert _node_count({"SLURM_JOB_NODELIST": "n[01-04]"}) == 4
    assert _node_count({"SLURM_JOB_NODELIST": "a,b[1,3-4]"}) == 4
    assert _node_count({"SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": "x"}) == 2
    shm, runs, logf = dirs
    leave_ring("7100", 0, 10, shm, runs)
    rc, err = run_epilog("7100", os.geteuid(), "--shm-dir", shm, "--run-dir", runs,
                         "--compact", "yes", env_extra={"SLURM_JOB_NODELIST": "n[1-2]"})
    assert rc == 0, err
    assert "compaction of a 2-node job is left to" in err
    assert count_records(runs / "7100") == 10 and not (runs / "7100.h5").exists()
