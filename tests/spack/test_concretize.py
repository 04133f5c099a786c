"""The recipe as real Spack 1.1.0 sees it: ``spack audit`` and the concretization of every
variant, with the builtin repository alone and with the Mochi repository added (fixtures in
conftest.py)."""
import pytest

BROKEN_MPI = ("mpilander", "mpi-serial")


def solved(concretized, spec):
    r = concretized[spec]
    assert r["ok"], f"spack could not concretize {spec}: {r.get('error')}"
    return r


def test_audit_passes(concretized):
    assert {"py-flowcept", "diaspora-stream-api", "py-google-re2",
            "py-hiredis"} <= set(concretized["audited"])
    audit = concretized["audit"]
    assert audit.returncode == 0, audit.stdout + audit.stderr
    groups = [line for line in audit.stdout.splitlines() if line.startswith("PKG-")]
    assert len(groups) >= 4 and all(line.endswith(": passed") for line in groups), audit.stdout


def test_default_concretizes_without_the_mochi_repository(concretized):
    r = solved(concretized, "py-flowcept")
    root = r["nodes"]["py-flowcept"]
    assert root["version"] == "main"
    assert root["variants"]["mpi"] == "True" and root["variants"]["hdf5"] == "True"
    assert root["variants"]["mofka"] == "False"
    assert {"py-mpi4py", "py-h5py", "py-numpy", "py-cffi", "py-lmdb", "py-msgpack",
            "py-orjson"} <= set(r["nodes"])
    assert r["mpi"] and r["mpi"] not in BROKEN_MPI
    assert {n["namespace"] for n in r["nodes"].values()} <= {"flowcept", "builtin"}
    assert_regex_engine(r["nodes"])


def assert_regex_engine(nodes):
    """google-re2 from this repository on a shared RE2 built on Abseil; orjson new enough."""
    assert nodes["py-google-re2"]["namespace"] == "flowcept"
    assert nodes["re2"]["variants"]["shared"] == "True"
    assert version_tuple(nodes["re2"]["version"]) >= (2023, 9, 1)
    assert "abseil-cpp" in nodes and "py-pybind11" in nodes
    assert version_tuple(nodes["py-orjson"]["version"]) >= (3, 9)


def version_tuple(text):
    return tuple(int(x) for x in text.replace("-", ".").split("."))


def test_without_mofka_needs_no_mochi_package(concretized):
    r = solved(concretized, "py-flowcept~mofka")
    assert not {"mofka", "diaspora-stream-api", "py-mochi-margo"} & set(r["nodes"])


def test_without_mpi_and_hdf5(concretized):
    r = solved(concretized, "py-flowcept~mpi~hdf5")
    assert r["mpi"] is None
    assert not {"py-mpi4py", "py-h5py", "hdf5", "py-redis", "py-hiredis"} & set(r["nodes"])
    assert_regex_engine(r["nodes"])


def test_redis_gets_a_hiredis_that_redis_py_uses(concretized):
    r = solved(concretized, "py-flowcept+redis~mpi~hdf5")
    nodes = r["nodes"]
    assert version_tuple(nodes["py-redis"]["version"]) >= (4, 5)
    hiredis = nodes["py-hiredis"]
    assert hiredis["namespace"] == "flowcept"      # the builtin repository has only 1.1.0
    # redis-py 7 imports hiredis only from 3.2 on (redis/utils.py)
    floor = (3, 2) if version_tuple(nodes["py-redis"]["version"]) >= (7,) else (2,)
    assert version_tuple(hiredis["version"]) >= floor
    assert_regex_engine(nodes)


def test_mofka_needs_the_mochi_repository(concretized):
    r = concretized["py-flowcept+mofka ^mofka"]
    assert not r["ok"], "+mofka concretized without the Mochi repository"
    assert "'mofka' does not exist" in r["error"], r["error"]


def test_mofka_with_mochi_and_mpich_uses_the_tested_versions(concretized):
    r = solved(concretized, "py-flowcept+mofka ^mpich")
    nodes = r["nodes"]
    assert r["mpi"] == "mpich"
    assert nodes["mofka"]["version"] == "0.8.2" and nodes["mofka"]["namespace"] == "mochi"
    assert nodes["mofka"]["variants"]["python"] == "True"
    dsa = nodes["diaspora-stream-api"]
    assert (dsa["version"], dsa["namespace"], dsa["variants"]["python"]) == ("0.5.2", "flowcept", "True")
    assert "py-mochi-margo" in nodes
    assert not set(BROKEN_MPI) & set(nodes)
    assert_regex_engine(nodes)


def test_recipe_refuses_mofka_without_its_python_client(concretized):
    problem = concretized["py-flowcept+mofka ^mofka~python"]["problem"]
    assert problem and "^mofka+python" in problem
    assert concretized["py-flowcept+mofka ^mofka+python"]["problem"] is None
