"""The SLURM job an epilog runs for: who owns it, where it ran (:class:`JobContext`), from
slurmd's environment, and the ``%u %U %j %w %h %n`` templates of the site configuration."""
from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from typing import Mapping, Optional


@dataclass(frozen=True)
class JobContext:
    job: str
    uid: int
    gid: Optional[int]
    user: str
    work_dir: str
    home: str
    nodes: int = 1


def _node_count(env: Mapping[str, str]) -> int:
    """Nodes of the job: SLURM_JOB_NUM_NODES, else a guess from SLURM_JOB_NODELIST."""
    n = env.get("SLURM_JOB_NUM_NODES", "").strip()
    if n.isdigit():
        return int(n)
    nodelist = env.get("SLURM_JOB_NODELIST", "").strip()
    if not nodelist:
        return 1
    count = 0
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\])?", nodelist):
        m = re.search(r"\[([^\]]*)\]", part)
        if not m:
            count += 1
            continue
        for rng in m.group(1).split(","):
            lo, _, hi = rng.partition("-")
            count += int(hi) - int(lo) + 1 if hi.isdigit() and lo.isdigit() else 1
    return max(count, 1)


def job_from_env(env: Mapping[str, str]) -> JobContext:
    """The job the epilog is for, from slurmd's environment (ValueError if incomplete)."""
    job = env.get("SLURM_JOB_ID", "").strip()
    if not job:
        raise ValueError("SLURM_JOB_ID is not set: run me as a SLURM Epilog, or set it "
                         "(and SLURM_JOB_UID) by hand")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", job) or job in (".", ".."):
        raise ValueError(f"SLURM_JOB_ID={job!r} is not a job id")
    uid_text = env.get("SLURM_JOB_UID", "").strip()
    if uid_text:
        if not uid_text.isdigit():
            raise ValueError(f"SLURM_JOB_UID={uid_text!r} is not a uid")
        uid = int(uid_text)
    elif os.geteuid() != 0:
        uid = os.geteuid()
    else:
        raise ValueError("SLURM_JOB_UID is not set: refusing to guess whose files to touch")
    gid_text = env.get("SLURM_JOB_GID", "").strip()
    gid = int(gid_text) if gid_text.isdigit() else None
    user, home = env.get("SLURM_JOB_USER", ""), ""
    try:
        import pwd
        pw = pwd.getpwuid(uid)
        user = user or pw.pw_name
        home = pw.pw_dir
        if gid is None:
            gid = pw.pw_gid
    except KeyError:
        pass
    return JobContext(job=job, uid=uid, gid=gid, user=user or str(uid),
                      work_dir=env.get("SLURM_JOB_WORK_DIR", ""), home=home,
                      nodes=_node_count(env))


def expand(template: str, ctx: JobContext) -> str:
    """Expands ``%u`` user, ``%U`` uid, ``%j`` job id, ``%w`` the job's work dir
    (SLURM_JOB_WORK_DIR), ``%h`` the user's home, ``%n`` the node name, ``%%`` a percent."""
    def sub(m: "re.Match[str]") -> str:
        c = m.group(1)
        if c == "%":
            return "%"
        value = {"u": ctx.user, "U": str(ctx.uid), "j": ctx.job, "w": ctx.work_dir,
                 "h": ctx.home, "n": socket.gethostname().split(".")[0]}.get(c)
        if value is None:
            raise ValueError(f"unknown template %{c} in {template!r} (known: %u %U %j %w %h %n %%)")
        if not value:
            raise ValueError(f"%{c} in {template!r} is empty for job {ctx.job}")
        return value
    return re.sub(r"%(.)", sub, template)

