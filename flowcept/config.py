"""Configuration as one frozen value.

Built once, in this order, later sources winning: built-in defaults, an
optional settings file (TOML or JSON; ``FLOWCEPT_SETTINGS_PATH`` or the
``settings_path`` argument), ``FLOWCEPT_<KEY>`` environment variables, then
keyword arguments.  Every value is validated; a bad value raises ConfigError
naming the key, where it came from, and the fix.

The core keys are the fields of ``Config``.  Each backend declares its own
options in its module (``OPTIONS``: a tuple of ``Option``); their keys are
``<backend>_<option>`` (``redis_stream``, ``lmdb_shards``, ...), validated
by that declaration and read as attributes (``config.redis_stream``).

This is the one place that reads the environment.  The batch system's job
id (SLURM_JOB_ID, PBS_JOBID, LSB_JOBID, FLUX_JOB_ID) becomes ``job_id``
here.  An unknown ``FLOWCEPT_*`` variable is warned about once and ignored
(as mpi4py does with ``MPI4PY_RC_*``); an unknown key in a file or in
arguments is an error.  Nothing here runs at import: call ``load_config()``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Tuple

from flowcept.errors import ConfigError

ENV_PREFIX = "FLOWCEPT_"
# FLOWCEPT_* variables that are read here but are not keys.
SETTINGS_ENV = "FLOWCEPT_SETTINGS_PATH"
# FLOWCEPT_* variables of flowcept's own tools that are not configuration keys: the
# Spack module's FLOWCEPT_HOME, the TaskProlog's FLOWCEPT_KEEP_ENV, the epilog's site file,
# the build's sanitizer switch, the test and benchmark scripts' locations.
NOT_KEYS = frozenset({"FLOWCEPT_HOME", "FLOWCEPT_KEEP_ENV", "FLOWCEPT_EPILOG_CONF",
                      "FLOWCEPT_EPILOG_PYTHON", "FLOWCEPT_EPILOG_ENABLED",
                      "FLOWCEPT_SANITIZE", "FLOWCEPT_MOCHI_PREFIX", "FLOWCEPT_MOCHI_VENDOR",
                      "FLOWCEPT_SPACK_CACHE", "FLOWCEPT_SPACK_VENDOR",
                      "FLOWCEPT_REF_VENV", "FLOWCEPT_TEST_REDIS",
                      # Flowcept's: built-in defaults, no settings file
                      "FLOWCEPT_USE_DEFAULT",
                      # read by the C library itself: "realtime" turns its TSC clock off
                      "FLOWCEPT_CLOCK"})
BATCH_JOB_VARS = ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "FLUX_JOB_ID")
# The settings file read when FLOWCEPT_SETTINGS_PATH names none (Flowcept's place);
# FLOWCEPT_USE_DEFAULT=true reads no file at all.
DEFAULT_SETTINGS_PATH = os.path.join("~", ".flowcept", "settings.yaml")
USE_DEFAULT_ENV = "FLOWCEPT_USE_DEFAULT"
# Variables a settings reader may take values from besides FLOWCEPT_* (Flowcept's
# MQ_HOST, MONGO_PORT, ...): a change of one rebuilds the process configuration.
READER_ENV_PREFIXES = ("MQ_", "KVDB_", "MONGO_", "LMDB_", "DB_FLUSH_MODE", "DUMP_BUFFER",
                       "TELEMETRY_ENABLED", "HOME")

__all__ = ["Config", "ConfigError", "Option", "build_config", "load_config", "process_config",
           "read_settings_file", "describe"]


class Option(NamedTuple):
    """One declared setting: what a backend (or the core) accepts."""
    name: str
    type: type
    default: Any
    doc: str
    choices: Optional[Tuple[Any, ...]] = None
    range: Optional[Tuple[int, int]] = None
    check: Optional[Callable[[Any], Optional[str]]] = None   # returns an error text or None


def _default_shm_dir() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


def _power_of_two(v: int) -> Optional[str]:
    if v & (v - 1):
        return f"must be a power of two, e.g. {1 << (v.bit_length() - 1)} or {1 << v.bit_length()}"
    return None


def _known(kind: str) -> Callable[[str], Optional[str]]:
    def check(v: str) -> Optional[str]:
        from flowcept import registry
        known = registry.names(kind)
        if v not in known:
            return (f"known {kind}s are {', '.join(known)}" if known else
                    f"no {kind} is registered (flowcept's package metadata is unreadable: reinstall)")
        return None
    return check


TELEMETRY_PARTS = ("cpu", "memory", "process", "gpu")


def _parts_problem(v: str) -> Optional[str]:
    bad = [p for p in v.split(",") if p.strip() and p.strip() not in TELEMETRY_PARTS]
    return f"unknown part(s) {', '.join(bad)}: use {', '.join(TELEMETRY_PARTS)}" if bad else None


# The core keys (backends declare theirs in their modules).
CORE = (
    Option("enabled", bool, True, "capture on or off"),
    Option("run_dir", str, "./flowcept-runs", "where each job's store and archive go"),
    Option("shm_dir", str, "", "node-local directory of the rings (\"\" = /dev/shm)"),
    Option("job_id", str, "", "the job name (\"\" = the batch system's job id, else generated)"),
    Option("ring_bytes", int, 4 << 20, "per-process ring, power of two", range=(4096, 1 << 34),
           check=_power_of_two),
    Option("ring_names", int, 4096, "activity names one ring can intern", range=(16, 1 << 16)),
    Option("ring_names_bytes", int, 256 << 10, "bytes of interned names per ring",
           range=(4096, 1 << 30)),
    Option("full_policy", str, "spill", "ring full: spill | block | drop",
           choices=("spill", "block", "drop")),
    Option("block_timeout_ms", int, 100, "full_policy=block: longest wait", range=(0, 3_600_000)),
    Option("batch_bytes", int, 4 << 20, "largest batch frame", range=(4096, 1 << 31)),
    Option("batch_records", int, 65536, "most records per batch", range=(1, 1 << 24)),
    Option("drain_interval_ms", int, 20, "leader poll period when idle", range=(1, 60_000)),
    Option("batch_latency_ms", int, 500, "a ring's records wait at most this long to be published",
           range=(0, 3_600_000)),
    Option("transport", str, "embedded", "how batches leave the node", check=_known("transport")),
    Option("transport_url", str, "", "e.g. redis://:pw@host:6379/0"),
    Option("spool_dir", str, "", "where batches wait while the transport is down (\"\" = "
           "<run_dir>/<job>/spool)"),
    Option("spool_retry_ms", int, 1000, "how often a leader retries a down transport",
           range=(1, 3_600_000)),
    Option("store", str, "lmdb", "where batches rest", check=_known("store")),
    Option("store_dir", str, "", "\"\" = <run_dir>/<job>/store"),
    Option("keeper_max_frame_bytes", int, 1 << 28, "keeper: larger frames are quarantined",
           range=(4096, 1 << 31)),
    Option("keeper_claim_idle_ms", int, 30_000, "keeper: take over a dead keeper's batches after "
           "this", range=(0, 86_400_000)),
    Option("capture_args", bool, True, "record used/generated"),
    Option("numpy_mode", str, "summary", "numpy arrays: summary | shape | full",
           choices=("summary", "shape", "full")),
    Option("numpy_stats_max", int, 4096, "summary: min/max/mean only up to this many elements",
           range=(0, 1 << 40)),
    Option("max_payload_bytes", int, 65536, "larger payloads are summarised", range=(0, 1 << 26)),
    Option("compact_memory_bytes", int, 256 << 20, "compaction: memory for sorting; beyond it "
           "sorted runs go to a temporary file next to the archive", range=(16 << 20, 1 << 44)),
    Option("leader", str, "process", "who drains the rings: process (a helper process, so the "
           "application's interpreter is never taken) | thread (a thread of the capturing "
           "process)", check=_known("leader")),
    Option("leader_node_rank", int, 0, "which rank of a node drains its rings", range=(0, 1 << 20)),
    Option("finalize_timeout_s", int, 60, "leader waits this long for ranks to end",
           range=(0, 86400)),
    Option("abort_on_error", bool, True, "MPI: abort the job when a rank raises"),
    Option("pure_python", bool, False, "use the pure-Python decorator even when the compiled "
           "one is built"),
    Option("local_copy", bool, False, "with a transport other than embedded, the leader also "
           "writes every batch into the run directory's store (readable on the node whatever "
           "consumes the transport)"),
    Option("telemetry", bool, False, "record telemetry_at_start/telemetry_at_end (CPU, memory, "
           "process) for each task of @flowcept_task and FlowceptTask"),
    Option("telemetry_parts", str, "cpu,memory,process", "what a telemetry snapshot holds: "
           "cpu, memory, process, gpu, comma-separated (empty: empty snapshots)",
           check=lambda v: _parts_problem(v)),
    Option("loop_task", bool, False, "FlowceptLoop also records one task for the whole loop "
           "(subtype whole_loop), the parent of its iterations"),
    Option("value_descriptions", str, "flowcept", "values JSON cannot hold: flowcept (the text "
           "<Class>_instance_id_<id>, as Flowcept writes) | rich (numpy arrays by dtype, shape "
           "and statistics, see numpy_mode; other objects by type and repr)",
           choices=("flowcept", "rich")),
    Option("log_level", str, "warning", "level of the 'flowcept' logger",
           choices=("debug", "info", "warning", "error")),
)
_CORE = {o.name: o for o in CORE}


@dataclass(frozen=True)
class Config:
    """All settings of a flowcept process.  Immutable; derive with ``replace``.

    Backend options are attributes too (``config.redis_stream``): the ones
    set are in ``options``, the others take their declared default."""

    enabled: bool = True
    run_dir: str = "./flowcept-runs"
    shm_dir: str = field(default_factory=_default_shm_dir)
    job_id: str = ""
    ring_bytes: int = 4 << 20
    ring_names: int = 4096
    ring_names_bytes: int = 256 << 10
    full_policy: str = "spill"
    block_timeout_ms: int = 100
    batch_bytes: int = 4 << 20
    batch_records: int = 65536
    drain_interval_ms: int = 20
    batch_latency_ms: int = 500
    transport: str = "embedded"
    transport_url: str = ""
    spool_dir: str = ""
    spool_retry_ms: int = 1000
    store: str = "lmdb"
    store_dir: str = ""
    keeper_max_frame_bytes: int = 1 << 28
    keeper_claim_idle_ms: int = 30_000
    capture_args: bool = True
    numpy_mode: str = "summary"
    numpy_stats_max: int = 4096
    max_payload_bytes: int = 65536
    compact_memory_bytes: int = 256 << 20
    leader: str = "process"
    leader_node_rank: int = 0
    finalize_timeout_s: int = 60
    abort_on_error: bool = True
    pure_python: bool = False
    local_copy: bool = False
    telemetry: bool = False
    telemetry_parts: str = "cpu,memory,process"
    loop_task: bool = False
    value_descriptions: str = "flowcept"
    log_level: str = "warning"
    options: Mapping[str, Any] = field(default_factory=dict, compare=True, repr=True)
    origins: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __getattr__(self, name: str) -> Any:
        # only called for names that are not fields: backend options
        if name.startswith("__"):
            raise AttributeError(name)
        opts = self.__dict__.get("options", {})
        if name in opts:
            return opts[name]
        opt = backend_option(name)
        if opt is None:
            raise AttributeError(f"Config has no key {name!r}{_suggest(name)}")
        return opt.default

    def replace(self, **changes: Any) -> "Config":
        values = {f.name: getattr(self, f.name) for f in fields(self)
                  if f.name not in ("options", "origins")}
        values.update(self.options)
        origins = dict(self.origins)
        origins.update({k: "replace()" for k in changes})
        values.update(changes)
        return build_config(values, source="replace()", origins=origins)

    def as_dict(self) -> Dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)
               if f.name not in ("options", "origins")}
        out.update(self.options)
        return out


_FIELDS = {f.name for f in fields(Config)} - {"options", "origins"}
assert _FIELDS == set(_CORE), "Config fields and CORE options differ"


def backend_options(kind: str, name: str) -> Tuple[Option, ...]:
    """The options a backend declares (its module's ``OPTIONS``), with their
    full keys (``<name>_<option>``)."""
    from flowcept import registry
    obj = registry.load(kind, name)
    module = sys.modules.get(getattr(obj, "__module__", ""), None)
    raw = getattr(obj, "OPTIONS", None) or getattr(module, "OPTIONS", ())
    out = []
    for o in raw:
        o = o if isinstance(o, Option) else Option(*o)
        out.append(o._replace(name=f"{name}_{o.name}"))
    return tuple(out)


_BACKEND_KINDS = ("transport", "source", "store", "adapter")


def backend_option(key: str) -> Optional[Option]:
    """The declaration of a backend key like ``redis_stream`` (None if none)."""
    from flowcept import registry
    for kind in _BACKEND_KINDS:
        for name in registry.names(kind):
            if key.startswith(name + "_"):
                try:
                    opts = backend_options(kind, name)
                except Exception:   # a backend that cannot load declares nothing
                    continue
                for o in opts:
                    if o.name == key:
                        return o
    return None


def _all_keys() -> list:
    from flowcept import registry
    keys = dict.fromkeys(_CORE)
    for kind in _BACKEND_KINDS:
        for name in registry.names(kind):
            try:
                keys.update(dict.fromkeys(o.name for o in backend_options(kind, name)))
            except Exception:
                pass
    return list(keys)


def _suggest(key: str) -> str:
    import difflib
    keys = _all_keys()
    close = difflib.get_close_matches(key, keys, n=1)
    return (f"; did you mean {close[0]!r}?" if close else
            "; `flowcept config` lists every key")


def _coerce(opt: Option, value: Any, source: str) -> Any:
    key, want, default = opt.name, opt.type, opt.default
    try:
        if want is bool:
            if isinstance(value, bool):
                out = value
            elif isinstance(value, int) and value in (0, 1):
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
        elif want is float:
            if isinstance(value, bool):
                raise ValueError
            out = float(value)
        else:
            if not isinstance(value, str):
                raise ValueError
            out = value
    except (TypeError, ValueError):
        raise ConfigError(
            f"{key}={value!r} (from {source}): expected {want.__name__}; "
            f"fix the value, e.g. {key}={default!r}") from None
    if opt.choices and out not in opt.choices:
        raise ConfigError(f"{key}={out!r} (from {source}): choose one of "
                          f"{', '.join(map(str, opt.choices))}")
    if opt.range:
        lo, hi = opt.range
        if not lo <= out <= hi:
            raise ConfigError(f"{key}={out} (from {source}): must be between {lo} and {hi}")
    if opt.check is not None:
        problem = opt.check(out)
        if problem:
            raise ConfigError(f"{key}={out!r} (from {source}): {problem}")
    return out


def _option(key: str, source: str) -> Option:
    opt = _CORE.get(key) or backend_option(key)
    if opt is None:
        raise ConfigError(f"unknown configuration key {key!r} (from {source}){_suggest(key)}")
    return opt


def build_config(values: Mapping[str, Any], source: str = "arguments",
                 origins: Optional[Mapping[str, str]] = None) -> Config:
    """Validates a complete or partial mapping into a Config (defaults fill the rest)."""
    core, extra = {}, {}
    for key, value in values.items():
        opt = _option(key, source)
        (core if key in _CORE else extra)[key] = _coerce(opt, value, source)
    origin = dict(origins or {})
    for key in values:
        origin.setdefault(key, source)
    return Config(**core, options=MappingProxyType(extra), origins=MappingProxyType(origin))


def read_settings_file(path: str, env: Optional[Mapping[str, str]] = None) -> dict:
    """Reads a TOML or JSON settings file (a [flowcept] table is accepted
    too), or a file whose suffix names a settings reader (registry group
    ``flowcept.settings_readers``: ``yaml`` reads Flowcept's settings.yaml);
    a reader gets the environment for the overrides its format defines."""
    suffix = os.path.splitext(path)[1].lstrip(".").lower()
    if suffix not in ("toml", "json", "", "flowcept"):   # "flowcept": the settings in effect
        from flowcept import registry
        try:
            reader = registry.load("settings_reader", suffix)
        except LookupError:
            reader = None
        if reader is not None:
            return reader(path, os.environ if env is None else env)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"settings file {path!r} cannot be read ({e.strerror}); "
                          f"fix {SETTINGS_ENV} or create the file") from None
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


_warned_env: set = set()


def _warn_unknown_env(name: str, key: str) -> None:
    if name in _warned_env:
        return
    _warned_env.add(name)
    warnings.warn(f"flowcept: ignoring environment variable {name}: not a configuration key"
                  f"{_suggest(key)}", RuntimeWarning, stacklevel=3)


def load_config(settings_path: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
                **overrides: Any) -> Config:
    """Builds the Config: defaults < settings file < FLOWCEPT_* env < overrides."""
    env = os.environ if env is None else env
    merged: dict = {}
    origin: dict = {}
    for var in BATCH_JOB_VARS:
        if env.get(var):
            merged["job_id"] = env[var].split(".")[0]
            origin["job_id"] = f"environment {var}"
            break
    use_default = env.get(USE_DEFAULT_ENV, "").strip().lower() in ("1", "true", "yes", "y", "t")
    path = settings_path or (None if use_default else env.get(SETTINGS_ENV))
    if not path and not use_default and (env is os.environ or "HOME" in env):
        home_default = os.path.expanduser(DEFAULT_SETTINGS_PATH) if env is os.environ else \
            os.path.join(env["HOME"], DEFAULT_SETTINGS_PATH.split(os.sep, 1)[1])
        path = home_default if os.path.isfile(home_default) else None
    if path:
        for key, value in read_settings_file(path, env).items():
            merged[key] = _coerce(_option(key, path), value, path)
            origin[key] = path
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == SETTINGS_ENV or name in NOT_KEYS:
            continue
        key = name[len(ENV_PREFIX):].lower()
        opt = _CORE.get(key) or backend_option(key)
        if opt is None:
            _warn_unknown_env(name, key)
            continue
        merged[key] = _coerce(opt, value, f"environment {name}")
        origin[key] = f"environment {name}"
    for key, value in overrides.items():
        merged[key] = _coerce(_option(key, "arguments"), value, "arguments")
        origin[key] = "arguments"
    core = {k: v for k, v in merged.items() if k in _CORE}
    extra = {k: v for k, v in merged.items() if k not in _CORE}
    if not core.get("shm_dir"):
        core.pop("shm_dir", None)
    return Config(**core, options=MappingProxyType(extra), origins=MappingProxyType(origin))


_process: Optional[Tuple[tuple, Config]] = None


def process_config() -> Config:
    """The process's configuration from its environment and settings file,
    built once and rebuilt only when a ``FLOWCEPT_*`` or batch-job variable
    changes (what decorators and lazily started sessions use)."""
    global _process
    snap = tuple(sorted((k, v) for k, v in os.environ.items()
                        if k.startswith(ENV_PREFIX) or k in BATCH_JOB_VARS
                        or k.startswith(READER_ENV_PREFIXES)))
    if _process is None or _process[0] != snap:
        _process = (snap, load_config())
    return _process[1]


def describe(config: Config) -> list:
    """(key, value, origin, doc) of every key, core and of the configured
    backends, for ``flowcept config``."""
    rows = [(o.name, getattr(config, o.name), config.origins.get(o.name, "default"), o.doc)
            for o in CORE]
    seen = set(_CORE)
    for kind, name in (("transport", config.transport), ("store", config.store)):
        try:
            opts = backend_options(kind, name)
        except Exception:
            continue
        for o in opts:
            if o.name not in seen:
                seen.add(o.name)
                rows.append((o.name, getattr(config, o.name),
                             config.origins.get(o.name, "default"), o.doc))
    for key, value in config.options.items():
        if key not in seen:
            rows.append((key, value, config.origins.get(key, "?"), ""))
    return rows
