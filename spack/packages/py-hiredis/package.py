# hiredis-py: the C parser of Redis replies that redis-py uses when it can import it (flowcept's
# keeper spends a quarter less CPU reading Redis with it).  Spack's builtin repository
# (spack-packages 1e8cf059) has only 1.1.0, which redis-py >= 5.1 ignores (redis-py 7.1 asks for
# hiredis >= 3.2, redis/utils.py).  This recipe adds the 2.x and 3.x releases; listed before the
# builtin repository it replaces the builtin recipe, so 1.1.0 is kept for older redis-py.  Each
# sdist bundles the hiredis C sources it compiles.  The checksums are PyPI's (its JSON metadata).

from spack.package import *


class PyHiredis(PythonPackage):
    """Python wrapper for hiredis: a fast C parser of the Redis protocol."""

    homepage = "https://github.com/redis/hiredis-py"
    pypi = "hiredis/hiredis-3.5.0.tar.gz"

    license("MIT")

    version("3.5.0", sha256="c227592cc56b7df247abe4755c26723965be68972be2149fa441ac33d82131ba")
    version("3.4.2", sha256="9a566dc70e9dd84be3550babc56a8e109bb65cafcac635aea027fa425196a7d7")
    version("3.2.1", sha256="5a5f64479bf04dd829fe7029fad0ea043eac4023abc6e946668cbbec3493a78d")
    version("2.4.0", sha256="90d7af678056c7889d86821344d79fec3932a6a1480ebba3d644cb29a3135348")
    version("1.1.0", sha256="996021ef33e0f50b97ff2d6b5f422a0fe5577de21a8873b58a779a5ddd1c3132")

    depends_on("c", type="build")

    depends_on("python@3.4:", type=("build", "run"))
    depends_on("python@3.8:", type=("build", "run"), when="@2.4:")
    depends_on("python@3.9:", type=("build", "run"), when="@3.5:")
    depends_on("py-setuptools", type="build")

    import_modules = ["hiredis"]
