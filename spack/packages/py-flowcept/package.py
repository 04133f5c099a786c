# Spack package recipe for flowcept, HPC-native workflow provenance (Python + C, MPI-aware).
#
# Exercised by real Spack 1.1.0 in the test suite (tests/spack/, offline): `spack audit`, `spack
# spec` of the default, ~mofka, ~mpi~hdf5, +redis~mpi~hdf5 and +mofka ^mpich variants, and a
# real install of py-flowcept@main~mpi~hdf5 from the checkout followed by `spack test run`.
# Written against the Spack >= 0.23 package API (repository API v1, which Spack 1.x still reads).

import os

from spack.package import *


class PyFlowcept(PythonPackage):
    """HPC-native, MPI-aware workflow provenance: decorators and a C API capture task records
    into crash-recoverable shared-memory rings that a node leader drains into sharded LMDB
    stores (embedded, Redis or Mofka transport), compacted into self-describing HDF5 archives."""

    homepage = "https://github.com/flowcept/flowcept-hpc"
    git = "https://github.com/flowcept/flowcept-hpc.git"
    url = "https://github.com/flowcept/flowcept-hpc/archive/refs/tags/v0.1.0.tar.gz"

    version("main", branch="main")
    # Released versions are added at release, with the checksum of their tarball:
    # `spack checksum py-flowcept <version>` (a version without a real checksum cannot be fetched,
    # yet Spack would prefer it to main).

    variant("mpi", default=True, description="MPI-aware capture: node leaders, rank ids (mpi4py)")
    variant("redis", default=False, description="Redis Streams transport")
    variant("mofka", default=False, description="Mofka (Mochi, RDMA) transport")
    variant("hdf5", default=True, description="HDF5 archive and offline analysis (h5py)")

    # The C library (csrc/) is built with make; Spack >= 0.23 wants the language declared.
    depends_on("c", type="build")
    depends_on("gmake", type="build")

    depends_on("python@3.9:", type=("build", "run"))
    depends_on("py-setuptools@61:", type="build")
    depends_on("py-wheel", type="build")
    # cffi compiles the extension at build time and loads it at run time.
    depends_on("py-cffi@1.15:", type=("build", "run"))
    depends_on("py-numpy@1.21:", type=("build", "run"))
    depends_on("py-msgpack@1:", type=("build", "run"))
    # 1.3 is the newest py-lmdb in the builtin repository; pyproject.toml says lmdb>=1.3 too.
    depends_on("py-lmdb@1.3:", type=("build", "run"))
    depends_on("py-tomli@1.1:", type=("build", "run"), when="^python@:3.10")
    # the read path's JSON writer (query, serve, exports)
    depends_on("py-orjson@3.9:", type=("build", "run"))
    # $regex in linear time (query, serve, MCP); py-google-re2 is in this repository
    depends_on("py-google-re2@1.1:", type=("build", "run"))

    depends_on("py-h5py@3.6:", type=("build", "run"), when="+hdf5")

    # MPI-3: the node leader splits COMM_WORLD with Split_type(COMM_TYPE_SHARED).
    depends_on("mpi@3:", when="+mpi")
    depends_on("py-mpi4py@3.1:", type=("build", "run"), when="+mpi")
    # Both concretize (the builtin repository offers them) but cannot run a multi-rank job.
    conflicts("^mpilander", when="+mpi", msg="mpilander runs a single MPI process; use ^mpich")
    conflicts("^mpi-serial", when="+mpi", msg="mpi-serial is a serial stub; use ^mpich")

    depends_on("py-redis@4.5:", type=("build", "run"), when="+redis")
    # hiredis: the C reply parser.  Newer than the builtin repository's 1.1.0, so py-hiredis is
    # in this repository too; redis-py 7 uses it only from 3.2 on.
    depends_on("py-hiredis@2:", type=("build", "run"), when="+redis")
    depends_on("py-hiredis@3.2:", type=("build", "run"), when="+redis ^py-redis@7:")

    # +mofka: Mofka from the Mochi repository (https://github.com/mochi-hpc/mochi-spack-packages,
    # repository API v2, Spack >= 1.0), diaspora-stream-api from this repository (neither the
    # builtin nor the Mochi repository has it at the commits tested).  Tested together: Mofka
    # 0.8.2 with diaspora-stream-api 0.5.2 (flowcept/transport/mofka.py speaks that generation).
    # Without the Mochi repository only +mofka fails to concretize: Spack drops a dependency
    # whose package it cannot find, but a *variant* on it (e.g. mofka+python) makes every spec
    # of this package fail while the solver's rules are written.  So no variant is named on a
    # Mochi package here: Mofka's python variant is on by default, and the install refuses a
    # spec without it (check_mofka_python).
    depends_on("mofka@0.8.2:0.8", when="+mofka")
    depends_on("diaspora-stream-api@0.5.2:0.5 +python", type=("build", "run"), when="+mofka")
    # mochi.mofka.client imports pymargo.
    depends_on("py-mochi-margo", type=("build", "run"), when="+mofka")

    import_modules = ["flowcept"]

    @run_before("install")
    def check_mofka_python(self):
        """+mofka needs Mofka's Python client (mochi.mofka.client), built by mofka+python."""
        problem = mofka_python_problem(self.spec)
        if problem:
            raise InstallError(problem)

    @run_after("install")
    def install_c_library(self):
        """Build csrc/ with its Makefile and install the C header and shared library."""
        with working_dir(self.stage.source_path):
            make("-C", "csrc", "CC={0}".format(spack_cc))
            mkdirp(self.prefix.include)
            mkdirp(self.prefix.lib)
            install(join_path("csrc", "flowcept.h"), self.prefix.include)
            install(join_path("csrc", "build", "libflowcept.so"), self.prefix.lib)
            static = join_path("csrc", "build", "libflowcept.a")
            if os.path.exists(static):
                install(static, self.prefix.lib)

    @run_after("install")
    def install_modules(self):
        """Render the module templates (spack/modules/) with this installation's prefix and
        site-packages directory (python_platlib, which Spack's python sets in this module for the
        build: lib or lib64, site- or dist-packages, as the Python in the spec lays them out) into
        <prefix>/share/flowcept/modules/."""
        dest = join_path(self.prefix, "share", "flowcept", "modules")
        mkdirp(dest)
        for name in ("flowcept.lua", "flowcept.tcl"):
            src = join_path(self.stage.source_path, "spack", "modules", name)
            if not os.path.isfile(src):
                continue
            with open(src) as f:
                text = f.read()
            text = render_module(text, str(self.prefix), str(python_platlib))
            with open(join_path(dest, name), "w") as f:
                f.write(text)

    def setup_run_environment(self, env):
        # bin/ (PATH) and the site-packages directory (PYTHONPATH) are added by Spack itself.
        env.set("FLOWCEPT_HOME", self.prefix)
        env.prepend_path("CPATH", self.prefix.include)
        env.prepend_path("LIBRARY_PATH", self.prefix.lib)
        env.prepend_path("LD_LIBRARY_PATH", self.prefix.lib)
        # FLOWCEPT_SHM_DIR / FLOWCEPT_RUN_DIR are left to the runtime defaults (/dev/shm,
        # ./flowcept-runs) or the site module (spack/modules/); only known FLOWCEPT_* keys may
        # be set, the runtime rejects unknown ones.

    # ---- stand-alone tests: `spack test run py-flowcept`
    def test_c_library(self):
        """the C header and shared library are installed"""
        header = join_path(self.prefix.include, "flowcept.h")
        lib = join_path(self.prefix.lib, "libflowcept.so")
        assert os.path.isfile(header), "missing " + header
        assert os.path.isfile(lib), "missing " + lib

    def test_python_import(self):
        """import flowcept, its compiled extension and the clients its variants add"""
        modules = ["flowcept", "flowcept.native", "orjson", "re2"]
        for variant, client in (("+mpi", "mpi4py.MPI"), ("+hdf5", "h5py"), ("+redis", "redis"),
                                ("+redis", "hiredis"),
                                ("+mofka", "diaspora_stream.api"),
                                ("+mofka", "mochi.mofka.client")):
            if self.spec.satisfies(variant):
                modules.append(client)
        python = self.spec["python"].command
        python("-c", "import {0}; print('flowcept ok')".format(", ".join(modules)))

    def test_query_regex_and_json(self):
        """$regex filters run on RE2 and documents go out as JSON through orjson"""
        python = self.spec["python"].command
        python("-c", QUERY_CHECK)

    def test_cli(self):
        """the flowcept command line starts"""
        flowcept = which(join_path(self.prefix.bin, "flowcept"))
        assert flowcept is not None, "flowcept script not installed"
        flowcept("--help")


# What `flowcept query` needs of py-google-re2 and py-orjson: RE2 matches (and refuses a
# backreference, which Python's re would run), and orjson writes the documents.
QUERY_CHECK = """\
import json, orjson
from flowcept.query.documents import dumps
from flowcept.query.filters import matches
from flowcept.query.limits import BadRequest
doc = {"activity_id": "train_step", "status": "FINISHED", "used": {"lr": 0.1}}
assert matches(doc, {"activity_id": {"$regex": "^train_"}, "status": "FINISHED"})
assert not matches(doc, {"activity_id": {"$regex": "eval$"}})
try:
    matches(doc, {"activity_id": {"$regex": r"(t)\\1"}})
except BadRequest as e:
    assert "backreferences" in str(e), e
else:
    raise SystemExit("$regex ran a backreference: not RE2")
assert dumps(doc) == orjson.dumps(doc) and json.loads(dumps(doc)) == doc
print("query ok")
"""


def render_module(text, prefix, platlib):
    """A module template with its placeholders filled in (kept outside the class so a site
    without Spack can do the same with sed: s|@FLOWCEPT_PREFIX@|...|; s|@FLOWCEPT_PLATLIB@|...|)."""
    return text.replace("@FLOWCEPT_PREFIX@", prefix).replace("@FLOWCEPT_PLATLIB@", platlib)


def mofka_python_problem(spec):
    """Why ``spec`` cannot run the Mofka transport (a one-line message naming the fix), or None."""
    if spec.satisfies("+mofka") and "mofka" in spec and not spec["mofka"].satisfies("+python"):
        return ("py-flowcept+mofka needs Mofka's Python client: concretize with ^mofka+python "
                "(Mofka's default), not ^mofka~python")
    return None
