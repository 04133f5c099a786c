"""Configuration as one frozen value.

Built once, in this order, later sources winning: built-in defaults, an
optional settings file (TOML or JSON; ``FLOWCEPT_SETTINGS_PATH`` or the
``settings_path`` argument), ``FLOWCEPT_<KEY>`` environment variables, then
keyword arguments.  Every value is validated; an unknown key or a bad value
raises ConfigError naming the key, where it came from, and the fix.

Nothing here runs at import: call ``load_config()``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Optional

ENV_PREFIX = "FLOWCEPT_"
# Environment variables with the prefix that are not configuration keys.
_ENV_NOT_KEYS = {"FLOWCEPT_SETTINGS_PATH", "FLOWCEPT_SANITIZE", "FLOWCEPT_REF_VENV",
                 "FLOWCEPT_HOME", "FLOWCEPT_TEST_REDIS", "FLOWCEPT_PURE_PYTHON"}


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message says how to fix it."""


def _default_shm_dir() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


_CHOICES = {
    "full_policy": ("spill", "block", "drop"),
    "numpy_mode": ("summary", "shape", "full"),
    "log_level": ("debug", "info", "warning", "error"),
}
# (minimum, maximum) for integer keys.
_RANGES = {
    "ring_bytes": (4096, 1 << 34),
    "batch_bytes": (4096, 1 << 31),
    "batch_records": (1, 1 << 24),
    "block_timeout_ms": (0, 3_600_000),
    "drain_interval_ms": (1, 60_000),
    "batch_latency_ms": (0, 3_600_000),
    "max_payload_bytes": (0, 1 << 26),
    "numpy_stats_max": (0, 1 << 40),
    "lmdb_shards": (1, 4096),
    "lmdb_map_size": (1 << 20, 1 << 44),
    "leader_node_rank": (0, 1 << 20),
    "finalize_timeout_s": (0, 86400),
    "redis_maxlen": (0, 1 << 40),
    "keeper_batch": (1, 1 << 20),
    # transports / keeper (issue #4)
    "redis_pipeline": (1, 1 << 16),
    "keeper_max_frame_bytes": (4096, 1 << 31),
    "keeper_claim_idle_ms": (0, 86_400_000),
    "spool_retry_ms": (1, 3_600_000),
}


@dataclass(frozen=True)
class Config:
    """All settings of a flowcept process.  Immutable; derive with ``replace``."""

    enabled: bool = True
    run_dir: str = "./flowcept-runs"
    shm_dir: str = field(default_factory=_default_shm_dir)
    job_id: str = ""                 # "" = SLURM_JOB_ID, else generated
    ring_bytes: int = 4 << 20        # per-process ring, power of two
    full_policy: str = "spill"       # ring full: spill | block | drop
    block_timeout_ms: int = 100
    batch_bytes: int = 4 << 20       # largest batch frame
    batch_records: int = 65536
    drain_interval_ms: int = 20      # leader poll period when idle
    batch_latency_ms: int = 500      # a ring's records wait at most this long to be published
    transport: str = "embedded"      # embedded | redis | mofka | null
    transport_url: str = ""          # e.g. redis://:pw@host:6379/0
    redis_stream: str = "flowcept"
    redis_maxlen: int = 0            # 0 = unbounded stream
    redis_group: str = "flowcept-keepers"  # consumer group of the keepers
    redis_pipeline: int = 64         # frames per round trip at most
    mofka_group_file: str = ""
    mofka_topic: str = "flowcept"
    mofka_protocol: str = "na+sm"
    spool_dir: str = ""              # "" = <run_dir>/<job>/spool
    store: str = "lmdb"
    store_dir: str = ""              # "" = <run_dir>/<job>/store
    lmdb_shards: int = 1
    lmdb_map_size: int = 1 << 36     # 64 GiB of address space, sparse
    keeper_batch: int = 256          # batches per keeper transaction
    keeper_max_frame_bytes: int = 1 << 28   # larger frames are quarantined
    keeper_claim_idle_ms: int = 30_000      # take over a dead keeper's batches after this
    spool_retry_ms: int = 1000       # how often a leader retries a down transport
    capture_args: bool = True        # record used/generated
    numpy_mode: str = "summary"      # summary | shape | full
    numpy_stats_max: int = 4096      # summary: min/max/mean only up to this many elements
    max_payload_bytes: int = 65536   # larger payloads are summarised
    leader_node_rank: int = 0        # which rank of a node drains its rings
    finalize_timeout_s: int = 60     # leader waits this long for ranks to end
    abort_on_error: bool = True      # MPI: abort the job when a rank raises
    log_level: str = "warning"

    def replace(self, **changes: Any) -> "Config":
        return build_config({**dataclasses.asdict(self), **changes}, source="replace()")


_FIELDS = {f.name: f for f in fields(Config)}


def _coerce(key: str, value: Any, source: str) -> Any:
    f = _FIELDS[key]
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    want = type(default)
    try:
        if want is bool:
            if isinstance(value, bool):
                out = value
            elif isinstance(value, (int,)) and value in (0, 1):
                out = bool(value)
            elif isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
                out = True
            elif isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off", ""):
                out = False
            else:
                raise ValueError
        elif want is int:
            if isinstance(value, bool):
                raise ValueError
            out = int(value, 0) if isinstance(value, str) else int(value)
            if isinstance(value, float) and value != out:
                raise ValueError
        else:
            if not isinstance(value, str):
                raise ValueError
            out = value
    except (TypeError, ValueError):
        raise ConfigError(
            f"{key}={value!r} (from {source}): expected {want.__name__}; "
            f"fix the value, e.g. {key}={default!r}") from None
    if key in _CHOICES and out not in _CHOICES[key]:
        raise ConfigError(f"{key}={out!r} (from {source}): choose one of {', '.join(_CHOICES[key])}")
    if key in _RANGES:
        lo, hi = _RANGES[key]
        if not lo <= out <= hi:
            raise ConfigError(f"{key}={out} (from {source}): must be between {lo} and {hi}")
    if key == "ring_bytes" and out & (out - 1):
        raise ConfigError(f"ring_bytes={out} (from {source}): must be a power of two, "
                          f"e.g. {1 << (out.bit_length() - 1)} or {1 << out.bit_length()}")
    if key == "redis_group" and not out.strip():
        raise ConfigError(f"redis_group (from {source}): must not be empty, e.g. 'flowcept-keepers'")
    if key == "transport":
        from flowcept.transport import transport_names  # registry of backends
        if out not in transport_names():
            raise ConfigError(f"transport={out!r} (from {source}): known transports are "
                              f"{', '.join(sorted(transport_names()))}")
    return out


def _suggest(key: str) -> str:
    import difflib
    close = difflib.get_close_matches(key, list(_FIELDS), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(_FIELDS))}"


def build_config(values: Mapping[str, Any], source: str = "arguments") -> Config:
    """Validates a complete or partial mapping into a Config (defaults fill the rest)."""
    out = {}
    for key, value in values.items():
        if key not in _FIELDS:
            raise ConfigError(f"unknown configuration key {key!r} (from {source}){_suggest(key)}")
        out[key] = _coerce(key, value, source)
    return Config(**out)


def read_settings_file(path: str) -> dict:
    """Reads a TOML or JSON settings file.  A [flowcept] table is accepted too."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"settings file {path!r} cannot be read ({e.strerror}); "
                          f"fix FLOWCEPT_SETTINGS_PATH or create the file") from None
    try:
        if path.endswith(".json"):
            data = json.loads(raw)
        else:
            try:
                import tomllib
            except ImportError:  # Python < 3.11
                import tomli as tomllib
            data = tomllib.loads(raw.decode())
    except Exception as e:
        raise ConfigError(f"settings file {path!r} is not valid "
                          f"{'JSON' if path.endswith('.json') else 'TOML'}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"settings file {path!r}: expected a table of key = value")
    if set(data) == {"flowcept"} and isinstance(data["flowcept"], dict):
        data = data["flowcept"]
    return data


def load_config(settings_path: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
                **overrides: Any) -> Config:
    """Builds the Config: defaults < settings file < FLOWCEPT_* env < overrides."""
    env = os.environ if env is None else env
    merged: dict = {}
    path = settings_path or env.get("FLOWCEPT_SETTINGS_PATH")
    if path:
        for key, value in read_settings_file(path).items():
            if key not in _FIELDS:
                raise ConfigError(f"unknown configuration key {key!r} (from {path}){_suggest(key)}")
            merged[key] = _coerce(key, value, path)
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name in _ENV_NOT_KEYS:
            continue
        key = name[len(ENV_PREFIX):].lower()
        if key not in _FIELDS:
            raise ConfigError(f"unknown environment variable {name}{_suggest(key)} "
                              f"(unset it or use FLOWCEPT_<KEY> with a known key)")
        merged[key] = _coerce(key, value, f"environment {name}")
    for key, value in overrides.items():
        if key not in _FIELDS:
            raise ConfigError(f"unknown configuration key {key!r} (from arguments){_suggest(key)}")
        merged[key] = _coerce(key, value, "arguments")
    return Config(**merged)
