"""Flowcept 1.0.3's settings, translated.

A Flowcept program is configured by ``~/.flowcept/settings.yaml`` (or
``FLOWCEPT_SETTINGS_PATH``), by Flowcept's built-in defaults where that file
is absent or ``FLOWCEPT_USE_DEFAULT`` is true, and by Flowcept's environment
overrides (``MQ_HOST``, ``MONGO_PORT``, ``DB_FLUSH_MODE``, ...; ignored
under ``FLOWCEPT_USE_DEFAULT``, as in Flowcept).  ``load()`` reads them into
one frozen ``FlowceptSettings``: ``constants()`` are Flowcept's
``flowcept.configs`` names, ``engine_keys()`` our configuration keys.

``read_settings(path, env)`` is registered as the reader of ``.yaml`` /
``.yml`` settings files (entry-point group ``flowcept.settings_readers``):
``flowcept.config.load_config`` calls it for a YAML path, so the engine
configures itself from Flowcept's file without importing this package.
"""
from __future__ import annotations

import copy
import getpass
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

from flowcept.errors import ConfigError

PROJECT_NAME = "flowcept"
DEFAULT_PATH = os.path.join("~", f".{PROJECT_NAME}", "settings.yaml")
DEFAULT_SETTINGS_NAME = "FLOWCEPT_DEFAULT_SETTINGS"   # SETTINGS_PATH without a file
TRUE_VALUES = frozenset({"1", "true", "yes", "y", "t"})

# Flowcept's built-in settings (what its configs module uses without a file).
DEFAULT_SETTINGS: Dict[str, Any] = {
    "log": {"log_file_level": "disable", "log_stream_level": "disable"},
    "project": {"dump_buffer": {"enabled": True}, "enrich_messages": False},
    "telemetry_capture": {},
    "instrumentation": {},
    "experiment": {},
    "mq": {"enabled": False},
    "kv_db": {"enabled": False},
    "web_server": {"max_label_length": 30},
    "sys_metadata": {},
    "extra_metadata": {},
    "db_buffer": {},
    "databases": {"mongodb": {"enabled": False}, "lmdb": {"enabled": False}},
    "adapters": {},
    "agent": {},
}

# Flowcept's environment overrides (the names its configs module reads).
ENV_NAMES = ("FLOWCEPT_USE_DEFAULT", "FLOWCEPT_SETTINGS_PATH", "MQ_ENABLED", "MQ_TYPE",
             "MQ_CHANNEL", "MQ_HOST", "MQ_PORT", "MQ_URI", "MQ_GROUP_ID", "MQ_USERNAME",
             "MQ_VHOST", "KVDB_HOST", "KVDB_PORT", "KVDB_URI", "MONGO_ENABLED", "MONGO_URI",
             "MONGO_HOST", "MONGO_PORT", "LMDB_ENABLED", "LMDB_PATH", "DB_FLUSH_MODE",
             "DUMP_BUFFER", "TELEMETRY_ENABLED", "WEBSERVER_HOST", "WEBSERVER_PORT",
             "WEBSERVER_MAX_LABEL_LENGTH", "AGENT_API_KEY", "AGENT_AUDIO", "AGENT_HOST",
             "AGENT_PORT", "AGENT_MODE", "MCP_ALLOWED_HOSTS", "MCP_ALLOWED_ORIGINS", "HOME")

# Flowcept's telemetry_capture parts -> the engine's telemetry parts (disk and
# network are not captured here).
TELEMETRY_PARTS = {"cpu": "cpu", "per_cpu": "cpu", "mem": "memory", "process_info": "process",
                   "gpu": "gpu"}


def telemetry_parts(conf: Optional[Mapping[str, Any]]) -> list:
    """The engine's parts of Flowcept's ``telemetry_capture`` settings."""
    return sorted({TELEMETRY_PARTS[k] for k, v in (conf or {}).items()
                   if v and k in TELEMETRY_PARTS})


# Flowcept MQ types that name a transport of ours.
_MQ_SCHEMES = {"redis": "redis", "kafka": "kafka", "mofka": "mofka"}


def is_yaml(path: str) -> bool:
    return str(path).lower().endswith((".yaml", ".yml"))


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in TRUE_VALUES


def _load_yaml(path: str) -> dict:
    try:
        import yaml
    except ImportError:
        raise ConfigError(f"settings file {path!r} is YAML: install PyYAML "
                          "(`pip install 'flowcept[compat]'`) or use a TOML/JSON file") from None
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"settings file {path!r} cannot be read ({e.strerror}); "
                          "fix FLOWCEPT_SETTINGS_PATH or create the file") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"settings file {path!r} is not valid YAML: "
                          f"{str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"settings file {path!r}: expected a mapping at the top level")
    return data


def _section(data: Mapping, name: str) -> dict:
    value = data.get(name)
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class FlowceptSettings:
    """Flowcept's settings as one value: the file (or the defaults), with its
    environment overrides applied when ``use_default`` is off."""

    path: str                                    # Flowcept's SETTINGS_PATH
    data: Mapping[str, Any] = field(repr=False)  # the settings, sections filled in
    env: Tuple[Tuple[str, str], ...] = ()        # the overrides in effect
    use_default: bool = False

    # -- environment -------------------------------------------------------
    def _env(self, name: str, default: Any = None) -> Any:
        if self.use_default:
            return default
        return dict(self.env).get(name, default)

    def _env_bool(self, name: str, default: Any) -> bool:
        return _truthy(self._env(name, str(default)))

    def _env_list(self, name: str, default: list) -> list:
        raw = dict(self.env).get(name)
        if not raw:
            return default
        import json
        try:
            return json.loads(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a JSON array, e.g. "
                              f"{name}='[\"localhost:*\"]'") from None

    def settings(self) -> dict:
        """A copy of the settings mapping (Flowcept's ``configs.settings``)."""
        return copy.deepcopy(dict(self.data))

    # -- Flowcept's constants ------------------------------------------------
    def constants(self) -> Dict[str, Any]:
        """Every name of Flowcept's ``flowcept.configs``, as Flowcept computes it."""
        s = self.settings()
        log, mq, kv = s["log"], s["mq"], s["kv_db"]
        project, dbs = s["project"], s.get("databases") or {}
        c: Dict[str, Any] = {"PROJECT_NAME": PROJECT_NAME,
                             "FLOWCEPT_DOCS_BASE_URL": "https://flowcept.readthedocs.io/en/latest",
                             "DEFAULT_SETTINGS": copy.deepcopy(DEFAULT_SETTINGS),
                             "USE_DEFAULT": self.use_default, "SETTINGS_PATH": self.path,
                             "settings": s}
        log_path = log.get("log_path", "default")
        c["LOG_FILE_PATH"] = f"{PROJECT_NAME}.log" if log_path == "default" else log_path
        c["LOG_FILE_LEVEL"] = str(log.get("log_file_level", "disable")).upper()
        c["LOG_STREAM_LEVEL"] = str(log.get("log_stream_level", "disable")).upper()
        c["FLOWCEPT_USER"] = s["experiment"].get("user", "blank_user")

        c["MQ_INSTANCES"] = mq.get("instances")
        c["MQ_SETTINGS"] = mq
        c["MQ_ENABLED"] = self._env_bool("MQ_ENABLED", mq.get("enabled", True))
        c["MQ_TYPE"] = self._env("MQ_TYPE", mq.get("type", "redis"))
        c["MQ_CHANNEL"] = self._env("MQ_CHANNEL", mq.get("channel", "interception"))
        c["MQ_PASSWORD"] = mq.get("password")
        c["MQ_HOST"] = self._env("MQ_HOST", mq.get("host", "localhost"))
        c["MQ_PORT"] = int(self._env("MQ_PORT", mq.get("port", "6379")))
        c["MQ_URI"] = self._env("MQ_URI", mq.get("uri"))
        c["MQ_GROUP_ID"] = self._env("MQ_GROUP_ID", mq.get("group_id", "auto"))
        c["MQ_USERNAME"] = self._env("MQ_USERNAME", mq.get("username", "guest"))
        c["MQ_VHOST"] = self._env("MQ_VHOST", mq.get("vhost", "/"))
        c["MQ_BUFFER_SIZE"] = mq.get("buffer_size", 1)
        c["MQ_INSERTION_BUFFER_TIME"] = mq.get("insertion_buffer_time_secs", 1)
        c["MQ_TIMING"] = mq.get("timing", False)
        c["MQ_CHUNK_SIZE"] = int(mq.get("chunk_size", -1))

        c["KVDB_PASSWORD"] = kv.get("password")
        c["KVDB_HOST"] = self._env("KVDB_HOST", kv.get("host", "localhost"))
        c["KVDB_PORT"] = int(self._env("KVDB_PORT", kv.get("port", "6379")))
        c["KVDB_URI"] = self._env("KVDB_URI", kv.get("uri"))
        c["KVDB_ENABLED"] = kv.get("enabled", False)
        c["DATABASES"] = dbs

        mongo = dbs.get("mongodb")
        c.update(MONGO_ENABLED=False, MONGO_URI=None, MONGO_HOST=None, MONGO_PORT=None,
                 MONGO_DB=PROJECT_NAME, MONGO_CREATE_INDEX=True)
        if mongo:
            c["MONGO_ENABLED"] = self._env_bool("MONGO_ENABLED", mongo.get("enabled", False))
            c["MONGO_URI"] = self._env("MONGO_URI", mongo.get("uri"))
            c["MONGO_HOST"] = self._env("MONGO_HOST", mongo.get("host", "localhost"))
            c["MONGO_PORT"] = int(self._env("MONGO_PORT", mongo.get("port", 27017)))
            c["MONGO_DB"] = mongo.get("db", PROJECT_NAME)
            c["MONGO_CREATE_INDEX"] = mongo.get("create_collection_index", True)
        lmdb = dbs.get("lmdb") or {}
        c["LMDB_SETTINGS"] = lmdb
        c["LMDB_ENABLED"] = False
        if lmdb:
            c["LMDB_ENABLED"] = self._env_bool("LMDB_ENABLED", lmdb.get("enabled", False))
            lmdb["path"] = self._env("LMDB_PATH", lmdb.get("path", "flowcept_lmdb"))
        c["DBS_ENABLED"] = c["MONGO_ENABLED"] or c["LMDB_ENABLED"]

        buf = s["db_buffer"]
        c["INSERTION_BUFFER_TIME"] = buf.get("insertion_buffer_time_secs")
        c["DB_BUFFER_SIZE"] = int(buf.get("buffer_size", 50))
        c["REMOVE_EMPTY_FIELDS"] = buf.get("remove_empty_fields", False)
        c["DB_INSERTER_MAX_TRIALS_STOP"] = buf.get("stop_max_trials", 240)
        c["DB_INSERTER_SLEEP_TRIALS_STOP"] = buf.get("stop_trials_sleep", 0.01)

        c["DB_FLUSH_MODE"] = self._env("DB_FLUSH_MODE", project.get("db_flush_mode", "offline"))
        c["PERF_LOG"] = project.get("performance_logging", False)
        c["JSON_SERIALIZER"] = project.get("json_serializer", "default")
        c["REPLACE_NON_JSON_SERIALIZABLE"] = project.get("replace_non_json_serializable", True)
        c["ENRICH_MESSAGES"] = project.get("enrich_messages", True)
        dump = project.get("dump_buffer") or {}
        c["DUMP_BUFFER_ENABLED"] = self._env_bool(
            "DUMP_BUFFER", dump.get("enabled", c["DB_FLUSH_MODE"] == "offline"))
        c["DUMP_BUFFER_PATH"] = dump.get("path", "flowcept_buffer.jsonl")
        c["APPEND_WORKFLOW_ID_TO_PATH"] = dump.get("append_workflow_id_to_path", False)
        c["APPEND_ID_TO_PATH"] = dump.get("append_id_to_path", False)
        c["DELETE_BUFFER_FILE"] = dump.get("delete_previous_file", True)

        tele = s.get("telemetry_capture")
        c["TELEMETRY_CAPTURE"] = tele
        c["TELEMETRY_ENABLED"] = (self._env_bool("TELEMETRY_ENABLED", True) and tele is not None
                                  and len(tele) > 0)

        meta = s.get("sys_metadata") or {}
        c["ENVIRONMENT_ID"] = meta.get("environment_id")
        c["PUBLIC_IP"] = meta.get("public_ip")
        c["PRIVATE_IP"] = meta.get("private_ip")
        login = meta.get("login_name")
        if login is None:
            try:
                login = getpass.getuser()
            except Exception:
                login = None
        c["LOGIN_NAME"] = login
        c["SYS_NAME"] = meta.get("sys_name") or os.uname()[0]
        c["NODE_NAME"] = meta.get("node_name") or os.uname()[1]
        try:
            c["HOSTNAME"] = socket.getfqdn()
        except Exception:
            c["HOSTNAME"] = socket.gethostname()
        extra = dict(s.get("extra_metadata") or {})
        extra.update(mq_host=c["MQ_HOST"], mq_port=c["MQ_PORT"])
        c["EXTRA_METADATA"] = extra

        web = s.setdefault("web_server", {})
        c["WEBSERVER_HOST"] = self._env("WEBSERVER_HOST", web.get("host", "127.0.0.1"))
        c["WEBSERVER_PORT"] = int(self._env("WEBSERVER_PORT", web.get("port", 8008)))
        c["WEBSERVER_UI_ENABLED"] = web.get("ui_enabled", True)
        c["WEBSERVER_CORS_ORIGINS"] = web.get("cors_origins", [])
        c["WEBSERVER_SSE_POLL_INTERVAL"] = float(web.get("sse_poll_interval_sec", 2.0))
        c["WEBSERVER_SSE_MAX_BATCH"] = int(web.get("sse_max_batch", 500))
        c["WEBSERVER_DASHBOARDS_DIR"] = os.path.expanduser(
            web.get("dashboards_dir", f"~/.{PROJECT_NAME}/dashboards"))
        c["WEBSERVER_MAX_LABEL_LENGTH"] = int(self._env("WEBSERVER_MAX_LABEL_LENGTH",
                                                        web.get("max_label_length", 30)))

        inst = s.get("instrumentation") or {}
        c["INSTRUMENTATION"] = inst
        c["INSTRUMENTATION_ENABLED"] = inst.get("enabled", True)
        agent = s.get("agent") or {}
        c["AGENT"] = agent
        c["AGENT_API_KEY"] = self._env("AGENT_API_KEY", agent.get("api_key"))
        c["AGENT_CHAT_ENABLED"] = agent.get("chat_enabled", True)
        c["AGENT_CHAT_MAX_TOOL_ITERATIONS"] = int(agent.get("chat_max_tool_iterations", 5))
        c["AGENT_CHAT_MAX_QUERY_LIMIT"] = int(agent.get("chat_max_query_limit", 1000))
        c["AGENT_CHAT_MAX_TOOL_RESULT_CHARS"] = int(agent.get("chat_max_tool_result_chars", 4000))
        c["AGENT_AUDIO"] = self._env_bool("AGENT_AUDIO", agent.get("audio_enabled", "false"))
        c["AGENT_HOST"] = self._env("AGENT_HOST", agent.get("mcp_host", "localhost"))
        c["AGENT_PORT"] = int(self._env("AGENT_PORT", agent.get("mcp_port", "8000")))
        c["AGENT_MODE"] = self._env("AGENT_MODE", agent.get("agent_mode", "disabled"))
        c["MCP_ALLOWED_HOSTS"] = self._env_list(
            "MCP_ALLOWED_HOSTS", agent.get("mcp_allowed_hosts", ["localhost:*", "127.0.0.1:*"]))
        c["MCP_ALLOWED_ORIGINS"] = self._env_list(
            "MCP_ALLOWED_ORIGINS", agent.get("mcp_allowed_origins",
                                             ["http://localhost:*", "http://127.0.0.1:*"]))
        adapters = s.get("adapters") or {}
        c["ADAPTERS"] = {a.get("kind") for a in adapters.values() if isinstance(a, dict)}
        return c

    # -- our configuration ----------------------------------------------------
    def engine_keys(self) -> Dict[str, Any]:
        """Our configuration keys for these settings: the MQ is our transport
        (``mq.enabled: false`` is the embedded one, which stores locally;
        with an MQ, the leader keeps a local copy, Flowcept's buffer), an
        enabled database our store (LMDB at ``databases.lmdb.path``, MongoDB
        at its URI or host and port), ``instrumentation.enabled`` our
        ``enabled``, the log levels our ``log_level``, any telemetry part on
        our ``telemetry``."""
        c = self.constants()
        ours: Dict[str, Any] = {"enabled": bool(c["INSTRUMENTATION_ENABLED"]),
                                "telemetry": bool(c["TELEMETRY_ENABLED"])}
        if c["TELEMETRY_ENABLED"]:
            ours["telemetry_parts"] = ",".join(telemetry_parts(c["TELEMETRY_CAPTURE"]))
        if c["MQ_ENABLED"]:
            kind = str(c["MQ_TYPE"]).lower()
            if kind not in _MQ_SCHEMES:
                raise ConfigError(f"mq.type {kind!r} (settings {self.path}): flowcept has no "
                                  f"{kind} transport; use one of {', '.join(_MQ_SCHEMES)}, or "
                                  "set mq.enabled: false")
            ours["transport"] = kind
            uri = c["MQ_URI"]
            if not uri:
                pw = c["MQ_PASSWORD"]
                auth = f":{pw}@" if pw else ""
                uri = f"{_MQ_SCHEMES[kind]}://{auth}{c['MQ_HOST']}:{c['MQ_PORT']}"
            ours["transport_url"] = str(uri)
            # what this process records stays readable here (Flowcept's buffer)
            ours["local_copy"] = True
        else:
            ours["transport"] = "embedded"
        if c["MONGO_ENABLED"]:
            ours["store"] = "mongodb"
            ours["mongodb_url"] = mongo_url(c)
            ours["mongodb_database"] = str(c["MONGO_DB"])
        elif c["LMDB_ENABLED"]:
            ours["store"] = "lmdb"
            if c["MQ_ENABLED"]:   # a keeper writes there; with the embedded transport, run_dir
                ours["store_dir"] = str(c["LMDB_SETTINGS"].get("path") or "flowcept_lmdb")
        level = (c["LOG_STREAM_LEVEL"] or "").lower()
        if level in ("debug", "info", "warning", "error"):
            ours["log_level"] = level
        elif level in ("critical", "disable", "disabled"):
            ours["log_level"] = "error"
        return ours


def mongo_url(c: Mapping[str, Any]) -> str:
    """MongoDB's URL from Flowcept's constants: MONGO_URI as given, else
    mongodb://host:port/<db>."""
    if c.get("MONGO_URI"):
        return str(c["MONGO_URI"])
    return f"mongodb://{c.get('MONGO_HOST') or 'localhost'}:{c.get('MONGO_PORT') or 27017}/" \
           f"{c.get('MONGO_DB') or PROJECT_NAME}"


def _fill(data: dict) -> dict:
    out = copy.deepcopy(data)
    for key, value in DEFAULT_SETTINGS.items():
        if key not in out or out[key] is None:
            out[key] = copy.deepcopy(value)
    return out


_cache: Dict[tuple, FlowceptSettings] = {}


def load(env: Optional[Mapping[str, str]] = None) -> FlowceptSettings:
    """Flowcept's settings in effect for ``env`` (default: this process's
    environment; Flowcept's variables are read here because they are
    Flowcept's interface, not ours).  Memoized per environment and file
    modification time."""
    env = os.environ if env is None else env
    snap = tuple(sorted((k, env[k]) for k in ENV_NAMES if k in env))
    use_default = _truthy(env.get("FLOWCEPT_USE_DEFAULT", "false"))
    path = None
    if not use_default:
        path = env.get("FLOWCEPT_SETTINGS_PATH") or os.path.expanduser(DEFAULT_PATH)
        if not os.path.exists(path):
            path = None
    stamp = None
    if path is not None:
        try:
            stamp = os.stat(path).st_mtime_ns
        except OSError:
            stamp = None
    key = (snap, path, stamp)
    hit = _cache.get(key)
    if hit is not None:
        return hit
    if path is None:
        data, shown = _fill({}), DEFAULT_SETTINGS_NAME
    elif is_yaml(path):
        data, shown = _fill(_load_yaml(path)), path
    else:   # our own TOML/JSON settings: Flowcept's names take their defaults
        data, shown = _fill({}), path
    value = FlowceptSettings(path=shown, data=data, env=snap, use_default=use_default)
    if len(_cache) > 16:
        _cache.clear()
    _cache[key] = value
    return value


def current_settings() -> Dict[str, Any]:
    """Flowcept's settings in effect as a dict (``flowcept.configs.settings``):
    registered as ``settings_reader`` ``flowcept``, where the engine's
    adapters read Flowcept's own sections (``adapters.*``, ``telemetry_capture``,
    ``instrumentation.torch``) without importing this package."""
    return load().settings()


def read_settings(path: str, env: Mapping[str, str]) -> Dict[str, Any]:
    """Our configuration keys from Flowcept's settings file at ``path``
    (the reader ``flowcept.config`` calls for a YAML path).  Sections that
    drive only Flowcept's own services (its key-value store, web server,
    agent) are read by the constants and otherwise left alone, as a drop-in
    must: docs/compatibility.md lists them."""
    data = _load_yaml(path)
    if isinstance(data.get("flowcept"), dict) and len(data) == 1:
        return dict(data["flowcept"])   # our own [flowcept] table, written as YAML
    snap = tuple(sorted((k, env[k]) for k in ENV_NAMES if k in env))
    value = FlowceptSettings(path=path, data=_fill(data), env=snap,
                             use_default=_truthy(env.get("FLOWCEPT_USE_DEFAULT", "false")))
    return value.engine_keys()
