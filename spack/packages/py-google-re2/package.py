# google-re2: RE2's own Python bindings (module re2), which flowcept's $regex filters run on so
# that no pattern can stall a query (matching time linear in the text).  Neither Spack's builtin
# repository (spack-packages 1e8cf059) nor the Mochi repository (128261a4) has it.  Built from
# PyPI's sdist: setup.py compiles one C++ file, _re2.cc (pybind11), which includes RE2's and
# Abseil's headers and links -lre2 only.  The checksums are PyPI's (its JSON metadata), checked
# against the downloaded sdists.

from spack.package import *


class PyGoogleRe2(PythonPackage):
    """RE2 Python bindings: a drop-in replacement for the re module whose matching time is
    linear in the input (no backreferences or lookaround)."""

    homepage = "https://github.com/google/re2"
    pypi = "google-re2/google_re2-1.1.20251105.tar.gz"

    license("BSD-3-Clause")

    # The two have the same _re2.cc; only the Python floor differs.  1.1.YYYYMMDD is cut from
    # RE2's YYYY-MM-DD release; 1.1.20251105 was built here against re2@2024-07-02 (the newest
    # in the builtin repository) and abseil-cpp@20260107.1.
    version(
        "1.1.20251105", sha256="1db14a292ee8303b91e91e7c37e05ac17d3c467f29416c79ac70a78be3e65bda"
    )
    version(
        "1.1.20240702", sha256="8788db69f6c93cb229df62c74b2d9aa8e64bf754e9495700f85812afa32efd2b"
    )

    depends_on("cxx", type="build")

    depends_on("python@3.8:3", type=("build", "run"))
    depends_on("python@3.9:3", type=("build", "run"), when="@1.1.20251105:")
    depends_on("py-setuptools", type="build")
    # header-only; _re2.cc uses py::register_local_exception, new in pybind11 2.8.0
    depends_on("py-pybind11@2.8:", type="build")

    # _re2.cc takes absl::string_view, so RE2 must be a release built on Abseil (2023-06-01 on;
    # 2023-09-01 is the first in the builtin repository).  Shared, because setup.py links -lre2
    # alone: a static libre2.a would leave Abseil's symbols unresolved when Python imports _re2.
    depends_on("re2@2023-09-01: +shared")
    # included directly (absl/strings/string_view.h)
    depends_on("abseil-cpp")

    import_modules = ["re2"]

    def flag_handler(self, name, flags):
        # Abseil's installed options.h is pinned to the C++ standard Abseil was built with
        # (std::string_view and friends from C++17 on); compile _re2.cc under the same one.
        if name == "cxxflags":
            flags.append("-std=c++{0}".format(self.spec["abseil-cpp"].variants["cxxstd"].value))
        return (flags, None, None)

    def test_match(self):
        """re2 compiles a pattern, matches, and refuses a backreference"""
        python = self.spec["python"].command
        python("-c", "import re2\n"
               "assert re2.compile(r'^a+b').search('aaab') is not None\n"
               "try:\n    re2.compile(r'(a)\\1')\nexcept re2.error:\n    pass\n"
               "else:\n    raise SystemExit('re2 accepted a backreference')\n"
               "print('re2 ok')")
