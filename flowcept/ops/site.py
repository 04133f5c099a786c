"""The epilog's site configuration: ``/etc/flowcept/epilog.conf`` (shell ``KEY=value`` lines,
also sourced by slurm/flowcept-epilog.sh) and command-line overrides -> :class:`EpilogSettings`.

The file decides what a root process does, so it is read only when it is a regular file owned
by root (or by us) that nobody else can write.
"""
from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from typing import Dict, Mapping, Optional

DEFAULT_CONF = "/etc/flowcept/epilog.conf"

# Keys of the site configuration file (shell syntax KEY=value, also read by the shell wrapper).
CONF_KEYS = {
    "FLOWCEPT_EPILOG_PYTHON": "python",
    "FLOWCEPT_EPILOG_SHM_DIR": "shm_dir",
    "FLOWCEPT_EPILOG_RUN_DIR": "run_dir",
    "FLOWCEPT_EPILOG_ARCHIVE_DIR": "archive_dir",
    "FLOWCEPT_EPILOG_COMPACT": "compact",
    "FLOWCEPT_EPILOG_TRANSPORT": "transport",
    "FLOWCEPT_EPILOG_TIME_LIMIT": "time_limit",
    "FLOWCEPT_EPILOG_LOG_FILE": "log_file",
    "FLOWCEPT_EPILOG_SETTINGS": "settings",
    "FLOWCEPT_EPILOG_ALLOW_ROOT_JOBS": "allow_root_jobs",
}


@dataclass(frozen=True)
class EpilogSettings:
    """What the site configured (every value may use the templates of :func:`expand`)."""

    shm_dir: str = "/dev/shm"
    run_dir: str = "%w/flowcept-runs"        # the job's ./flowcept-runs (the default run_dir)
    archive_dir: str = ""                    # "" = the run dir: <run_dir>/<job>.h5
    compact: bool = False
    transport: str = ""                      # "" = from the settings file, else embedded
    time_limit: float = 120.0                # seconds for all the work of one job
    log_file: str = ""                       # "" = stderr only
    settings: str = ""                       # a flowcept settings file (TOML/JSON) for the rest
    allow_root_jobs: bool = True             # act for jobs of uid 0 (as root, on root's files)
    python: str = ""                         # only used by the shell wrapper


def _bool(value: str, key: str) -> bool:
    v = str(value).strip().lower()
    if v in ("1", "yes", "true", "on"):
        return True
    if v in ("0", "no", "false", "off", ""):
        return False
    raise ValueError(f"{key}={value!r}: expected yes or no")


def read_conf(path: str) -> Dict[str, str]:
    """Reads ``KEY=value`` lines (shell syntax subset: comments, optional quotes, ``export``).

    The file must be a regular file, not a symlink, owned by root or by us, and not writable by
    group or others: it decides what a root process does.
    """
    from flowcept.ops.safefs import UnsafePathError, open_owned
    try:
        fd = open_owned(path, os.geteuid())
    except UnsafePathError:
        if os.geteuid() == 0:
            raise
        fd = open_owned(path, 0)   # a root-owned site file read by a user
    with os.fdopen(fd, "r") as f:
        st = os.fstat(f.fileno())
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise UnsafePathError(path, "writable by group or others")
        text = f.read()
    out: Dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].strip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"{path}:{lineno}: expected KEY=value, got {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        out[key] = value
    return out


def settings_from(conf: Mapping[str, str], overrides: Mapping[str, object]) -> EpilogSettings:
    values: Dict[str, object] = {}
    for key, value in conf.items():
        name = CONF_KEYS.get(key)
        if name is not None:
            values[name] = value
    values.update({k: v for k, v in overrides.items() if v is not None})
    for name in ("compact", "allow_root_jobs"):
        if name in values and not isinstance(values[name], bool):
            values[name] = _bool(values[name], name)
    if "time_limit" in values:
        values["time_limit"] = float(values["time_limit"])
        if not 0 < values["time_limit"] <= 86400:
            raise ValueError(f"time_limit={values['time_limit']}: must be in (0, 86400] seconds")
    return EpilogSettings(**values)



def settings_from_args(args, env: Optional[Mapping[str, str]] = None) -> EpilogSettings:
    env = os.environ if env is None else env
    path = args.conf or env.get("FLOWCEPT_EPILOG_CONF") or (
        DEFAULT_CONF if os.path.exists(DEFAULT_CONF) else None)
    conf = read_conf(path) if path else {}
    overrides = {"shm_dir": args.shm_dir, "run_dir": args.run_dir,
                 "archive_dir": args.archive_dir, "compact": args.compact,
                 "transport": args.transport, "time_limit": args.time_limit,
                 "log_file": args.log_file, "settings": args.settings}
    return settings_from(conf, overrides)

