"""Flowcept's settings (settings.yaml, its environment overrides,
FLOWCEPT_USE_DEFAULT) translated: our configuration keys and Flowcept's
constants."""
import json
import os

import pytest

pytest.importorskip("yaml", reason="Flowcept's settings are YAML (PyYAML)")

from flowcept.compat import settings  # noqa: E402
from flowcept.config import ConfigError, load_config  # noqa: E402

SETTINGS = """
project:
  db_flush_mode: online
  dump_buffer:
    enabled: {dump}
    path: {path}
    append_workflow_id_to_path: true
log:
  log_stream_level: info
telemetry_capture:
  cpu: true
  mem: false
instrumentation:
  enabled: true
mq:
  type: redis
  host: 10.0.0.5
  port: 6380
  buffer_size: 50
kv_db:
  host: localhost
databases:
  lmdb:
    enabled: true
    path: my_lmdb
  mongodb:
    enabled: false
    host: db.example
    port: 27018
    db: prov
web_server:
  host: 0.0.0.0
"""


def write(tmp_path, dump="false", path="buf.jsonl", text=SETTINGS):
    p = tmp_path / "settings.yaml"
    p.write_text(text.format(dump=dump, path=path))
    return str(p)


def test_engine_keys_of_flowcept_settings(tmp_path):
    path = write(tmp_path)
    cfg = load_config(path, env={})
    assert cfg.transport == "redis" and cfg.transport_url == "redis://10.0.0.5:6380"
    assert cfg.local_copy is True                      # the buffer beside the MQ
    assert cfg.store == "lmdb" and cfg.store_dir == "my_lmdb"   # the keeper writes there
    assert cfg.telemetry is True and cfg.telemetry_parts == "cpu"
    assert cfg.log_level == "info" and cfg.enabled is True
    assert cfg.origins["transport"] == path


def test_flowcept_environment_overrides_and_use_default(tmp_path):
    path = write(tmp_path)
    env = {"FLOWCEPT_SETTINGS_PATH": path, "MQ_HOST": "mq.example", "MQ_PORT": "7000",
           "LMDB_PATH": "elsewhere"}
    cfg = load_config(env=env)
    assert cfg.transport_url == "redis://mq.example:7000" and cfg.store_dir == "elsewhere"
    c = settings.load(env).constants()
    assert c["MQ_HOST"] == "mq.example" and c["MQ_PORT"] == 7000 and c["SETTINGS_PATH"] == path
    # FLOWCEPT_USE_DEFAULT: Flowcept's built-in settings, no file, no overrides
    env["FLOWCEPT_USE_DEFAULT"] = "true"
    cfg = load_config(env=env)
    assert cfg.transport == "embedded" and cfg.origins.get("transport") is None
    c = settings.load(env).constants()
    assert c["SETTINGS_PATH"] == "FLOWCEPT_DEFAULT_SETTINGS" and c["MQ_ENABLED"] is False
    assert c["DUMP_BUFFER_ENABLED"] is True and c["MQ_HOST"] == "localhost"


def test_mongodb_host_port_uri_and_database(tmp_path):
    text = SETTINGS.replace("  lmdb:\n    enabled: true", "  lmdb:\n    enabled: false") \
                   .replace("  mongodb:\n    enabled: false", "  mongodb:\n    enabled: true")
    path = write(tmp_path, text=text)
    cfg = load_config(path, env={})
    assert cfg.store == "mongodb" and cfg.mongodb_url == "mongodb://db.example:27018/prov"
    assert cfg.mongodb_database == "prov"
    cfg = load_config(path, env={"MONGO_URI": "mongodb://u:p@h:1/x", "MONGO_PORT": "2"})
    assert cfg.mongodb_url == "mongodb://u:p@h:1/x"


def test_constants_as_flowcept_computes_them(tmp_path):
    path = write(tmp_path, dump="true", path="b.jsonl")
    c = settings.load({"FLOWCEPT_SETTINGS_PATH": path}).constants()
    assert c["PROJECT_NAME"] == "flowcept" and c["LOG_FILE_PATH"] == "flowcept.log"
    assert c["DB_FLUSH_MODE"] == "online" and c["MQ_ENABLED"] is True and c["KVDB_ENABLED"] is False
    assert c["DUMP_BUFFER_ENABLED"] is True and c["DUMP_BUFFER_PATH"] == "b.jsonl"
    assert c["APPEND_WORKFLOW_ID_TO_PATH"] is True and c["APPEND_ID_TO_PATH"] is False
    assert c["LMDB_ENABLED"] is True and c["MONGO_ENABLED"] is False and c["MONGO_DB"] == "prov"
    assert c["TELEMETRY_ENABLED"] is True and c["TELEMETRY_CAPTURE"] == {"cpu": True, "mem": False}
    assert c["MQ_INSERTION_BUFFER_TIME"] == 1 and c["INSERTION_BUFFER_TIME"] is None
    assert c["EXTRA_METADATA"] == {"mq_host": "10.0.0.5", "mq_port": 6380}


def test_configs_module_and_config_values(tmp_path, monkeypatch):
    path = write(tmp_path)
    monkeypatch.setenv("FLOWCEPT_SETTINGS_PATH", path)
    from flowcept import configs
    from flowcept.commons.utils import get_current_config_values
    from flowcept.configs import PROJECT_NAME, MQ_TYPE
    assert PROJECT_NAME == "flowcept" and MQ_TYPE == "redis" and configs.SETTINGS_PATH == path
    values = get_current_config_values()
    assert values["LOG_FILE_PATH"] == "flowcept.log" and values["MQ_PORT"] == 6380
    with pytest.raises(AttributeError):
        configs.NO_SUCH_NAME


def test_mq_off_means_embedded_and_bad_yaml_is_one_clear_error(tmp_path):
    p = tmp_path / "s.yml"
    p.write_text("mq:\n  enabled: false\ninstrumentation:\n  enabled: false\n")
    cfg = load_config(str(p), env={})
    assert cfg.transport == "embedded" and cfg.enabled is False and cfg.local_copy is False
    p.write_text("mq: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(p), env={})
    p.write_text("mq:\n  type: nosuchmq\n")
    with pytest.raises(ConfigError, match="nosuchmq"):
        load_config(str(p), env={})


def test_dump_buffer_settings_write_the_buffer_file_at_stop(tmp_path, monkeypatch):
    buf = tmp_path / "out" / "flowcept_buffer.jsonl"
    path = tmp_path / "s.yaml"
    path.write_text(f"project:\n  dump_buffer:\n    enabled: true\n    path: {buf}\n"
                    "    delete_previous_file: false\n")
    monkeypatch.setenv("FLOWCEPT_SETTINGS_PATH", str(path))
    monkeypatch.delenv("DUMP_BUFFER")   # the settings say
    from flowcept import Flowcept, configs, flowcept_task
    assert configs.DUMP_BUFFER_ENABLED is True and configs.DUMP_BUFFER_PATH == str(buf)

    @flowcept_task
    def f(x):
        return x

    with Flowcept(save_workflow=False):
        f(1)
    lines = buf.read_text().splitlines()
    assert lines[0].startswith('{"') and '": ' not in lines[0]   # compact, as Flowcept's orjson
    msgs = [json.loads(x) for x in lines]
    assert [m["used"] for m in msgs] == [{"x": 1}]
    assert Flowcept.read_buffer_file() == msgs   # the file named in the settings
    with Flowcept(save_workflow=True):            # appended: start, end
        pass
    assert [m["type"] for m in Flowcept.read_buffer_file()] == ["task", "workflow", "workflow"]
    with Flowcept(delete_buffer_file=True):       # deleted at start, written again at stop
        assert not os.path.exists(buf)
    assert os.path.exists(buf)
