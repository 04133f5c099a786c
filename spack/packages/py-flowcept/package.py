# Spack package recipe for flowcept, HPC-native workflow provenance (Python + C, MPI-aware).
#
# Checked statically (tests/spack/test_recipe.py): Spack could not be installed on the machine
# this was written on.  Every depends_on (and every `when=` on a dependency) is checked against
# the versions and variants of the builtin repository (spack/spack-packages 1e8cf059) and the
# Mochi repository (mochi-hpc/mochi-spack-packages 128261a4).  Written against the Spack >= 0.22
# package API.

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
    # TO FILL AT RELEASE: replace the placeholder with the sha256 of the v0.1.0 tarball
    # (`spack checksum py-flowcept 0.1.0`).  With all zeros the fetch fails its checksum.
    version("0.1.0", sha256="0000000000000000000000000000000000000000000000000000000000000000")

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

    depends_on("py-h5py@3.6:", type=("build", "run"), when="+hdf5")

    depends_on("mpi", when="+mpi")
    depends_on("py-mpi4py@3.1:", type=("build", "run"), when="+mpi")

    depends_on("py-redis@4.5:", type=("build", "run"), when="+redis")

    # From the Mochi repository (https://github.com/mochi-hpc/mochi-spack-packages, Spack >= 1.0
    # repository API v2): add it with `spack repo add` before concretizing +mofka.
    # The transport speaks two Python client generations (flowcept/transport/mofka.py):
    # Mofka 0.6.x (mochi.mofka.client on pymofka_client) and Mofka >= 0.8 (diaspora-stream-api
    # >= 0.4).  Mofka 0.7.0 ships diaspora-stream-api 0.3 and is refused at start.  Mofka >= 0.7
    # depends on the diaspora-stream-api package, which neither the builtin nor the Mochi
    # repository (at the commit checked) provides: for @0.8: a site must add a repository that
    # has it (see spack/README.md); @0.6 concretizes with the two repositories alone.
    depends_on("mofka@0.6.0:0.6.4,0.8.0: +python", when="+mofka")
    # mochi.mofka.client imports pymargo in both generations.
    depends_on("py-mochi-margo", type=("build", "run"), when="+mofka")

    import_modules = ["flowcept"]

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
        site-packages directory (python_platlib: lib or lib64, site- or dist-packages, as the
        Python in the spec lays them out) into <prefix>/share/flowcept/modules/."""
        dest = join_path(self.prefix, "share", "flowcept", "modules")
        mkdirp(dest)
        for name in ("flowcept.lua", "flowcept.tcl"):
            src = join_path(self.stage.source_path, "spack", "modules", name)
            if not os.path.isfile(src):
                continue
            with open(src) as f:
                text = f.read()
            text = render_module(text, str(self.prefix), str(self.python_platlib))
            with open(join_path(dest, name), "w") as f:
                f.write(text)

    def setup_run_environment(self, env):
        env.set("FLOWCEPT_HOME", self.prefix)
        env.prepend_path("PATH", self.prefix.bin)
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
        """import flowcept and its compiled extension"""
        python = self.spec["python"].command
        python("-c", "import flowcept, flowcept.native; print('flowcept ok')")

    def test_cli(self):
        """the flowcept command line starts"""
        flowcept = which(join_path(self.prefix.bin, "flowcept"))
        assert flowcept is not None, "flowcept script not installed"
        flowcept("--help")


def render_module(text, prefix, platlib):
    """A module template with its placeholders filled in (kept outside the class so a site
    without Spack can do the same with sed: s|@FLOWCEPT_PREFIX@|...|; s|@FLOWCEPT_PLATLIB@|...|)."""
    return text.replace("@FLOWCEPT_PREFIX@", prefix).replace("@FLOWCEPT_PLATLIB@", platlib)
