import json

import pytest

from flowcept.config import Config, ConfigError, build_config, load_config


def test_defaults_are_frozen():
    c = load_config(env={})
    assert c.enabled and c.transport == "embedded" and c.full_policy == "spill"
    with pytest.raises(Exception):
        c.enabled = False


def test_precedence_file_env_args(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('ring_bytes = 65536\nfull_policy = "drop"\nbatch_records = 10\n')
    env = {"FLOWCEPT_SETTINGS_PATH": str(f), "FLOWCEPT_FULL_POLICY": "block",
           "FLOWCEPT_BATCH_RECORDS": "20"}
    c = load_config(env=env, batch_records=30)
    assert c.ring_bytes == 65536        # file
    assert c.full_policy == "block"     # env beats file
    assert c.batch_records == 30        # argument beats env


def test_flowcept_table_and_json(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('[flowcept]\nenabled = false\n')
    assert load_config(str(f), env={}).enabled is False
    j = tmp_path / "s.json"
    j.write_text(json.dumps({"lmdb_shards": 4}))
    assert load_config(str(j), env={}).lmdb_shards == 4


def test_unknown_key_suggests_fix(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'ring_bytes'"):
        load_config(env={}, ring_byte=4096)
    # an unknown environment variable is warned about (with the fix), never fatal
    with pytest.warns(RuntimeWarning, match="FLOWCEPT_RING_BYTEZ.*did you mean 'ring_bytes'"):
        assert load_config(env={"FLOWCEPT_RING_BYTEZ": "1"}).ring_bytes == 4 << 20
    f = tmp_path / "s.toml"
    f.write_text('transprt = "redis"\n')
    with pytest.raises(ConfigError, match="transprt.*did you mean 'transport'"):
        load_config(str(f), env={})


@pytest.mark.parametrize("key,value,fragment", [
    ("ring_bytes", "3000", "between"),
    ("ring_bytes", 12288, "power of two"),
    ("full_policy", "explode", "choose one of spill, block, drop"),
    ("enabled", "maybe", "expected bool"),
    ("batch_records", "lots", "expected int"),
    ("transport", "carrier-pigeon", "known transports"),
])
def test_bad_values_name_key_and_fix(key, value, fragment):
    with pytest.raises(ConfigError) as e:
        build_config({key: value})
    assert key in str(e.value) and fragment in str(e.value)


def test_bad_settings_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(str(tmp_path / "missing.toml"), env={})
    f = tmp_path / "bad.toml"
    f.write_text("this is = = not toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(str(f), env={})


def test_env_booleans_and_replace():
    c = load_config(env={"FLOWCEPT_ENABLED": "0", "FLOWCEPT_CAPTURE_ARGS": "off"})
    assert c.enabled is False and c.capture_args is False
    d = c.replace(enabled=True)
    assert d.enabled and isinstance(d, Config) and c.enabled is False


def test_import_is_cheap():
    import subprocess
    import sys
    code = ("import sys, flowcept; "
            "heavy = [m for m in ('numpy', 'lmdb', 'msgpack', 'flowcept._flowcept_c', 'mpi4py') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
