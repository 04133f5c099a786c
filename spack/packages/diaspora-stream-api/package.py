# diaspora-stream-api: the event-streaming API that Mofka >= 0.7 implements, and the Python client
# (diaspora_stream.api) that flowcept's Mofka transport speaks.  Neither the builtin repository
# (spack-packages 1e8cf059) nor the Mochi repository (mochi-spack-packages 128261a4) has it, so
# the Mochi repository's mofka@0.7: cannot concretize without it; py-flowcept+mofka needs it.
# Only the version tested with flowcept is listed (built from its source with Mofka 0.8.2; see
# docs/transports.md).  If your Mochi repository gains its own diaspora-stream-api, the
# repository listed first in `spack repo list` wins.

from spack.package import *


class DiasporaStreamApi(CMakePackage):
    """API for distributed event-streaming services for HPC (implemented by Mofka)."""

    homepage = "https://github.com/diaspora-project/diaspora-stream-api"
    git = "https://github.com/diaspora-project/diaspora-stream-api.git"

    # The commit of the v0.5.2 tag, as tested (Spack checks it after cloning).
    version("0.5.2", tag="v0.5.2", commit="ba23eae551ae5867d89321ffefa8e40ba71825e6")

    variant("python", default=True, description="Python module diaspora_stream.api")

    extends("python", when="+python")

    depends_on("c", type="build")
    depends_on("cxx", type="build")
    depends_on("cmake@3.21:", type="build")
    depends_on("pkgconfig", type="build")
    depends_on("nlohmann-json")
    depends_on("nlohmann-json-schema-validator@2.3.0:")
    depends_on("spdlog")
    # the CMake target yaml-cpp::yaml-cpp appeared in 0.8
    depends_on("yaml-cpp@0.8:")
    # header-only, for the diaspora-ctl tool
    depends_on("tclap", type="build")
    depends_on("py-pybind11", type="build", when="+python")

    def cmake_args(self):
        # tests and benchmarks fetch Catch2 and need MPI: not built here
        return [
            self.define_from_variant("ENABLE_PYTHON", "python"),
            self.define("ENABLE_TESTS", False),
            self.define("ENABLE_BENCHMARKS", False),
        ]
