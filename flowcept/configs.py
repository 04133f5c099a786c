"""Flowcept's ``flowcept.configs`` constants, read from our configuration
and from Flowcept's settings YAML when one is in use.

Computed on first access (not at import): ``from flowcept.configs import
INSTRUMENTATION_ENABLED`` reads the configuration then.  Constants for
Flowcept's own services (MongoDB, Redis KV store, MQ) say what our
configuration uses instead: the store is always on (LMDB_ENABLED true for
the embedded store), there is no key-value database (KVDB_ENABLED false).
"""
import os
import socket

_NAMES = ("SETTINGS_PATH", "INSTRUMENTATION_ENABLED", "TELEMETRY_ENABLED", "DUMP_BUFFER_ENABLED",
          "DUMP_BUFFER_PATH", "MONGO_ENABLED", "LMDB_ENABLED", "KVDB_ENABLED", "MQ_ENABLED",
          "MQ_TYPE", "MQ_HOST", "MQ_PORT", "MQ_URI", "MQ_INSTANCES", "HOSTNAME",
          "REPLACE_NON_JSON_SERIALIZABLE", "APPEND_WORKFLOW_ID_TO_PATH", "APPEND_ID_TO_PATH",
          "DB_FLUSH_MODE", "FLOWCEPT_USER", "JSON_SERIALIZER", "PERF_LOG", "DATABASES",
          "RUN_DIR")

DEFAULT_DUMP_BUFFER_PATH = "flowcept_buffer.jsonl"


def compat_values() -> dict:
    """Flowcept-only values (dump buffer, telemetry) of the settings YAML in
    use ({} without one)."""
    from flowcept import compat_settings
    path = os.environ.get("FLOWCEPT_SETTINGS_PATH") or compat_settings.default_yaml_path()
    if not path or not compat_settings.is_yaml(path):
        return {}
    if compat_settings.compat_values.get("settings_path") != path:
        compat_settings.read_flowcept_yaml(path)
    return dict(compat_settings.compat_values)


def _values() -> dict:
    from flowcept.config import process_config
    cfg = process_config()
    extra = compat_values()
    from urllib.parse import urlparse
    url = urlparse(cfg.transport_url) if cfg.transport_url else None
    mq = cfg.transport not in ("embedded", "null")
    return {
        "SETTINGS_PATH": extra.get("settings_path") or os.environ.get("FLOWCEPT_SETTINGS_PATH"),
        "INSTRUMENTATION_ENABLED": cfg.enabled,
        "TELEMETRY_ENABLED": bool(extra.get("telemetry_enabled", False)),
        "DUMP_BUFFER_ENABLED": bool(extra.get("dump_buffer_enabled", False)),
        "DUMP_BUFFER_PATH": extra.get("dump_buffer_path", DEFAULT_DUMP_BUFFER_PATH),
        "MONGO_ENABLED": cfg.store == "mongodb",
        "LMDB_ENABLED": cfg.store == "lmdb",
        "KVDB_ENABLED": False,
        "MQ_ENABLED": mq,
        "MQ_TYPE": cfg.transport,
        "MQ_HOST": url.hostname if url else None,
        "MQ_PORT": url.port if url else None,
        "MQ_URI": cfg.transport_url or None,
        "MQ_INSTANCES": None,
        "HOSTNAME": socket.gethostname(),
        "REPLACE_NON_JSON_SERIALIZABLE": bool(extra.get("replace_non_json_serializable", True)),
        "APPEND_WORKFLOW_ID_TO_PATH": False,
        "APPEND_ID_TO_PATH": False,
        "DB_FLUSH_MODE": extra.get("db_flush_mode", "offline"),
        "FLOWCEPT_USER": os.environ.get("USER", "root"),
        "JSON_SERIALIZER": extra.get("json_serializer", "default"),
        "PERF_LOG": bool(extra.get("performance_logging", False)),
        "DATABASES": {cfg.store: {"enabled": True}},
        "RUN_DIR": cfg.run_dir,
    }


def __getattr__(name):
    if name not in _NAMES:
        raise AttributeError(f"module 'flowcept.configs' has no attribute {name!r}")
    return _values()[name]


def __dir__():
    return list(_NAMES) + ["compat_values", "DEFAULT_DUMP_BUFFER_PATH"]
