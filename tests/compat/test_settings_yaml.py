"""Flowcept's settings.yaml: the keys that map onto ours are honoured, the
rest reported once as not applicable; the buffer dump settings drive
Flowcept.dump_buffer at stop."""
import json
import os
import warnings

import pytest

pytest.importorskip("yaml", reason="Flowcept's settings are YAML (PyYAML)")

from flowcept.compat_settings import translate  # noqa: E402
from flowcept.config import ConfigError, load_config  # noqa: E402

SETTINGS = """
project:
  debug: true
  dump_buffer:
    enabled: {dump}
    path: {path}
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
    path: flowcept_lmdb
  mongodb:
    enabled: false
web_server:
  host: 0.0.0.0
"""


def write(tmp_path, dump="false", path="buf.jsonl"):
    p = tmp_path / "settings.yaml"
    p.write_text(SETTINGS.format(dump=dump, path=path))
    return str(p)


def test_translate_maps_keys_and_lists_the_rest(tmp_path):
    import yaml
    ours, extras, skipped = translate(yaml.safe_load(SETTINGS.format(dump="true", path="b.jsonl")))
    assert ours == {"transport": "redis", "transport_url": "redis://10.0.0.5:6380",
                    "store": "lmdb", "enabled": True, "log_level": "info"}
    assert extras["dump_buffer_enabled"] is True and extras["dump_buffer_path"] == "b.jsonl"
    assert extras["telemetry_enabled"] is True
    text = "; ".join(skipped)
    assert "kv_db" in text and "web_server" in text and "mq.buffer_size" in text
    assert "databases.lmdb.path" in text


def test_load_config_reads_flowcept_yaml_and_warns_once(tmp_path, monkeypatch):
    path = write(tmp_path)
    with pytest.warns(RuntimeWarning, match="not applicable here"):
        cfg = load_config(path)
    assert cfg.transport == "redis" and cfg.transport_url == "redis://10.0.0.5:6380"
    assert cfg.log_level == "info" and cfg.origins["transport"] == path
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_config(path)   # reported once per file


def test_mq_off_means_embedded_and_bad_yaml_is_one_clear_error(tmp_path):
    p = tmp_path / "s.yml"
    p.write_text("mq:\n  enabled: false\ninstrumentation:\n  enabled: false\n")
    cfg = load_config(str(p))
    assert cfg.transport == "embedded" and cfg.enabled is False
    p.write_text("mq: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(p))
    p.write_text("mq:\n  type: nosuchmq\n")
    with pytest.raises(ConfigError, match="nosuchmq"):
        load_config(str(p))


def test_dump_buffer_settings_write_the_buffer_file_at_stop(tmp_path, monkeypatch):
    buf = tmp_path / "out" / "flowcept_buffer.jsonl"
    path = tmp_path / "s.yaml"
    path.write_text(f"project:\n  dump_buffer:\n    enabled: true\n    path: {buf}\n")
    monkeypatch.setenv("FLOWCEPT_SETTINGS_PATH", str(path))
    from flowcept import Flowcept, configs, flowcept_task
    assert configs.DUMP_BUFFER_ENABLED is True and configs.DUMP_BUFFER_PATH == str(buf)
    assert configs.SETTINGS_PATH == str(path)

    @flowcept_task
    def f(x):
        return x

    with Flowcept(save_workflow=False):
        f(1)
    msgs = [json.loads(x) for x in buf.read_text().splitlines()]
    assert [m["used"] for m in msgs] == [{"x": 1}]
    assert Flowcept.read_buffer_file() == msgs   # the file named in the settings
    with Flowcept(delete_buffer_file=True):    # deleted at start, written again at stop
        assert not os.path.exists(buf)
    assert os.path.exists(buf)
