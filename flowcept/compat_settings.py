"""Flowcept 1.0.3's settings YAML read as our configuration.

Flowcept programs come with a ``settings.yaml`` (``FLOWCEPT_SETTINGS_PATH``
or ``~/.flowcept/settings.yaml``).  The keys that mean the same thing here
are translated into our keys; the ones that only drive Flowcept's own
services (its Redis key-value store, its consumers, its agent, its web
server) are listed once in a warning as not applicable.  Keys that only the
Flowcept-style API uses (the buffer dump file, telemetry) are kept in
``flowcept_extras`` of the returned mapping's companion, ``compat_values``.

Bottom layer: imports nothing from flowcept but errors; reading happens only
when load_config() is called with a YAML path.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Dict, List, Optional, Tuple

from flowcept.errors import ConfigError

YAML_SUFFIXES = (".yaml", ".yml")
DEFAULT_PATH = os.path.join("~", ".flowcept", "settings.yaml")

# Values of the last YAML read that have no Config key (used by the
# Flowcept-style API only): dump_buffer_enabled, dump_buffer_path,
# telemetry_enabled, settings_path.
compat_values: Dict[str, Any] = {}
_warned: set = set()

# Top-level sections that drive only Flowcept's own services.
_NOT_APPLICABLE = {
    "kv_db": "the ring and leader replace Flowcept's key-value store",
    "web_server": "the query service is `flowcept serve`",
    "sys_metadata": "job, node and rank come from the batch system",
    "extra_metadata": "put it in Flowcept(workflow_args=...)",
    "analytics": "no analytics service here",
    "agent": "no agent service here",
    "adapters": "adapters are configured by their own options",
    "db_buffer": "batching is ring_bytes/batch_records/batch_latency_ms",
    "mlflow": "adapters are configured by their own options",
    "tensorboard": "adapters are configured by their own options",
    "dask": "adapters are configured by their own options",
}


def is_yaml(path: str) -> bool:
    return path.lower().endswith(YAML_SUFFIXES)


def default_yaml_path() -> Optional[str]:
    """~/.flowcept/settings.yaml when it exists (Flowcept's default)."""
    path = os.path.expanduser(DEFAULT_PATH)
    return path if os.path.isfile(path) else None


def _load(path: str) -> dict:
    try:
        import yaml
    except ImportError:
        raise ConfigError(f"settings file {path!r} is YAML: install PyYAML "
                          "(`pip install flowcept[compat]`) or use a TOML/JSON file") from None
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"settings file {path!r} cannot be read ({e.strerror}); "
                          "fix FLOWCEPT_SETTINGS_PATH or create the file") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"settings file {path!r} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"settings file {path!r}: expected a mapping at the top level")
    return data


def _section(data: dict, name: str) -> dict:
    v = data.get(name)
    return v if isinstance(v, dict) else {}


def translate(data: dict, path: str = "<settings>") -> Tuple[Dict[str, Any], Dict[str, Any], List[str]]:
    """(our keys, compat-only values, not-applicable notes) of a parsed
    Flowcept settings mapping."""
    ours: Dict[str, Any] = {}
    extras: Dict[str, Any] = {"settings_path": path}
    skipped: List[str] = []

    if isinstance(data.get("flowcept"), dict) and len(data) == 1:
        # our own TOML-style [flowcept] table written as YAML: our keys as they are
        return dict(data["flowcept"]), extras, skipped

    mq = _section(data, "mq")
    if mq:
        # Flowcept's MQ type names a transport of ours of the same name (the
        # configuration then checks that it is registered)
        if mq.get("enabled", True) is False:
            ours["transport"] = "embedded"
        else:
            kind = str(mq.get("type", "redis")).lower()
            ours["transport"] = kind
            host, port = mq.get("host"), mq.get("port")
            if host:
                pw = mq.get("password")
                auth = f":{pw}@" if pw else ""
                ours["transport_url"] = f"{kind}://{auth}{host}" + (f":{port}" if port else "")
        for k in ("instances", "channel", "buffer_size", "insertion_buffer_time_secs",
                  "timing", "chunk_size", "same_as_kvdb"):
            if k in mq:
                skipped.append(f"mq.{k}: batching here is ring_bytes/batch_latency_ms")

    # databases.<name>.enabled names a store of ours of the same name; our
    # store is on even where Flowcept's settings turn every database off
    dbs = _section(data, "databases")
    chosen = [name for name, sec in dbs.items() if isinstance(sec, dict) and sec.get("enabled")]
    if chosen:
        ours["store"] = str(chosen[-1]).lower()
        sec = dbs[chosen[-1]]
        url = sec.get("uri") or (f"{chosen[-1]}://{sec['host']}:{sec['port']}"
                                 if sec.get("host") and sec.get("port") else None)
        if url:
            extras["store_url"] = url
            skipped.append(f"databases.{chosen[-1]} address: pass it with the store's own "
                           "option (see `flowcept config`)")
    for name, sec in dbs.items():
        if isinstance(sec, dict) and sec.get("path"):
            skipped.append(f"databases.{name}.path: the store is <run_dir>/<job>/store; "
                           "set run_dir or store_dir")

    project = _section(data, "project")
    dump = _section(project, "dump_buffer")
    if dump:
        extras["dump_buffer_enabled"] = bool(dump.get("enabled", False))
        if dump.get("path"):
            extras["dump_buffer_path"] = str(dump["path"])
    for k in ("replace_non_json_serializable", "db_flush_mode", "debug", "json_serializer",
              "performance_logging", "enrich_messages"):
        if k in project:
            extras[k] = project[k]

    tele = data.get("telemetry_capture")
    if isinstance(tele, dict):
        extras["telemetry_enabled"] = any(bool(v) for v in tele.values())
    elif tele is not None:
        extras["telemetry_enabled"] = bool(tele)

    inst = _section(data, "instrumentation")
    if "enabled" in inst:
        ours["enabled"] = bool(inst["enabled"])

    log = _section(data, "log")
    level = log.get("log_stream_level") or log.get("log_file_level")
    if isinstance(level, str) and level.lower() in ("debug", "info", "warning", "error"):
        ours["log_level"] = level.lower()
    elif isinstance(level, str) and level.lower() == "disable":
        ours["log_level"] = "error"

    for name, why in _NOT_APPLICABLE.items():
        if name in data:
            skipped.append(f"{name}: {why}")
    return ours, extras, skipped


def read_flowcept_yaml(path: str) -> Dict[str, Any]:
    """Our configuration keys from a Flowcept settings YAML (what
    config.read_settings_file returns for a YAML path)."""
    ours, extras, skipped = translate(_load(path), path)
    compat_values.clear()
    compat_values.update(extras)
    if skipped and path not in _warned:
        _warned.add(path)
        warnings.warn(f"flowcept: {path}: not applicable here (ignored): " + "; ".join(skipped),
                      RuntimeWarning, stacklevel=3)
    return ours
