# Spack package recipe for flowcept, HPC-native workflow provenance (Python + C, MPI-aware).
#
# Checked only statically (tests/spack/test_recipe.py): Spack could not be installed on the
# machine this was written on.  Written against the Spack >= 0.22 package API.

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
    depends_on("py-lmdb@1.4:", type=("build", "run"))
    depends_on("py-tomli@1.1:", type=("build", "run"), when="^python@:3.10")

    depends_on("py-h5py@3.6:", type=("build", "run"), when="+hdf5")

    depends_on("mpi", when="+mpi")
    depends_on("py-mpi4py@3.1:", type=("build", "run"), when="+mpi")

    depends_on("py-redis@4.5:", type=("build", "run"), when="+redis")

    # From the Mochi repository (https://github.com/mochi-hpc/mochi-spack-packages): add it
    # with `spack repo add` before concretizing +mofka.
    depends_on("mofka", when="+mofka")
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
        python("-c", "import flowcept, flowcept._native; print('flowcept ok')")

    def test_cli(self):
        """the flowcept command line starts"""
        flowcept = which(join_path(self.prefix.bin, "flowcept"))
        assert flowcept is not None, "flowcept script not installed"
        flowcept("--help")
