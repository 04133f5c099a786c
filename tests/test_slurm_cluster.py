"""The SLURM test helper brings up a real single-node cluster, runs a job and its epilog."""

import os
import stat
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # no tests/__init__.py: find support/

from support.slurm_cluster import (  # noqa: E402
    SlurmCluster,
    wait_until,
)

pytestmark = pytest.mark.slurm


def _write_exe(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.mark.timeout(120)
def test_two_task_job_runs_and_epilog_fires(slurm_ok, tmp_path):
    marker = tmp_path / "epilog.log"
    epilog = _write_exe(
        tmp_path / "epilog.sh",
        f"""
        #!/bin/sh
        echo "$SLURM_JOB_ID $SLURM_JOB_UID $SLURM_SCRIPT_CONTEXT" >> {marker}
        exit 0
        """,
    )
    out = tmp_path / "job.out"
    job = _write_exe(
        tmp_path / "job.sh",
        f"""
        #!/bin/sh
        #SBATCH -n 2
        #SBATCH --output={out}
        srun -O -n 2 sh -c 'echo "task $SLURM_PROCID on $(hostname)"'
        """,
    )
    with SlurmCluster(tmp_path / "cluster", epilog=epilog) as cluster:
        assert cluster.running
        assert "SLURM_CONF" not in os.environ or os.environ["SLURM_CONF"] != cluster.env["SLURM_CONF"]
        job_id = cluster.sbatch(job, wait=True, timeout=60)
        assert cluster.job_state(job_id) == "COMPLETED", cluster.job_info(job_id)

        lines = sorted(out.read_text().split("\n"))
        tasks = sorted(line.split()[1] for line in lines if line.startswith("task "))
        assert tasks == ["0", "1"], out.read_text()

        def epilog_line():
            if not marker.exists():
                return None
            for line in marker.read_text().splitlines():
                if line.split()[:1] == [job_id]:
                    return line
            return None

        line = cluster.wait_epilog_done(job_id, epilog_line, timeout=30)
        assert line.split() == [job_id, str(os.getuid()), "epilog_slurmd"]
        pids = cluster.pids()

    # the daemons are gone, the files the test may want to inspect are not
    assert not cluster.running
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert (tmp_path / "cluster" / "slurm.conf").is_file()
    assert (tmp_path / "cluster" / "log" / "slurmctld.log").is_file()


@pytest.mark.timeout(120)
def test_cancel_and_bounded_wait(slurm_ok, tmp_path):
    job = _write_exe(
        tmp_path / "sleep.sh",
        """
        #!/bin/sh
        sleep 300
        """,
    )
    with SlurmCluster(tmp_path / "cluster") as cluster:
        job_id = cluster.sbatch(job, "-n", "1", wait=False)
        wait_until(lambda: cluster.job_state(job_id) == "RUNNING", timeout=20, what="job running")
        with pytest.raises(TimeoutError):
            cluster.wait_job(job_id, timeout=1)
        cluster.scancel(job_id)
        assert cluster.wait_job(job_id, timeout=30) in {"CANCELLED", "GONE"}


def test_wait_until_is_bounded():
    with pytest.raises(TimeoutError):
        wait_until(lambda: False, timeout=0.3, interval=0.05)
    assert wait_until(lambda: 42, timeout=1) == 42
