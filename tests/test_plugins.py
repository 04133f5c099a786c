"""A backend from a separate package: one file plus one entry-point line,
and flowcept finds it, validates its options and publishes through it."""
import os
import struct
import subprocess
import sys
import textwrap

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PLUGIN = os.path.join(HERE, "support", "plugin_demo")


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory):
    target = tmp_path_factory.mktemp("plugin-site")
    build = tmp_path_factory.mktemp("plugin-build")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--no-build-isolation", "--target", str(target), PLUGIN],
                       capture_output=True, text=True, timeout=300, cwd=str(build))
    assert r.returncode == 0, r.stdout + r.stderr
    return str(target)


def run(code, plugin_path, tmp_path, **env):
    e = {k: v for k, v in os.environ.items() if not k.startswith("FLOWCEPT_")}
    e.update(PYTHONPATH=plugin_path, FLOWCEPT_RUN_DIR=str(tmp_path / "runs"), **env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120, env=e, cwd=str(tmp_path))


def test_third_party_transport_is_found_configured_and_used(plugin_path, tmp_path):
    out = tmp_path / "frames.bin"
    r = run("""
        from flowcept import registry, flowcept_task, Flowcept
        from flowcept.config import load_config, describe
        assert "filebus" in registry.names("transport"), registry.names("transport")
        cfg = load_config()
        assert cfg.transport == "filebus" and cfg.filebus_path.endswith("frames.bin")
        assert any(row[0] == "filebus_path" for row in describe(cfg))

        @flowcept_task
        def f(x):
            return x * 2

        with Flowcept(workflow_name="plugin"):
            assert [f(i) for i in range(10)] == list(range(0, 20, 2))
        print("ok")
    """, plugin_path, tmp_path, FLOWCEPT_TRANSPORT="filebus", FLOWCEPT_FILEBUS_PATH=str(out))
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr
    data = out.read_bytes()
    records, pos = 0, 0
    from flowcept.native.batch import Batch
    while pos < len(data):
        (n,) = struct.unpack_from("<I", data, pos)
        frame = data[pos + 4 + 24: pos + 4 + 24 + n]
        records += len(Batch(frame).records)
        pos += 4 + 24 + n
    assert records >= 10      # ten tasks plus the workflow records


def test_a_plugin_option_is_validated_by_its_declaration(plugin_path, tmp_path):
    r = run("""
        from flowcept.config import load_config, ConfigError
        try:
            load_config(filebus_path=3)
        except ConfigError as e:
            print("refused:", e)
        try:
            load_config(filebus_pathh="x")
        except ConfigError as e:
            print("unknown:", e)
    """, plugin_path, tmp_path)
    assert "refused: filebus_path=3" in r.stdout and "expected str" in r.stdout, r.stdout + r.stderr
    assert "did you mean 'filebus_path'" in r.stdout, r.stdout + r.stderr


def test_unknown_backend_names_the_known_ones(tmp_path):
    r = run("""
        from flowcept.config import load_config, ConfigError
        try:
            load_config(transport="nosuch")
        except ConfigError as e:
            print(e)
    """, "", tmp_path)
    assert "transport='nosuch'" in r.stdout and "embedded" in r.stdout and "redis" in r.stdout, \
        r.stdout + r.stderr
