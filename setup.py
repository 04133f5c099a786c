"""Build script: the compiled parts are declared here, everything else in
pyproject.toml.  The cffi module hosts the ring/batch ABI of csrc/flowcept.h;
flowcept._fastcapture (csrc/pycapture.c) is the compiled @flowcept_task
wrapper (optional at run time: the pure-Python wrapper is used without it)."""
from setuptools import Extension, setup

setup(
    cffi_modules=["flowcept/_build_ext.py:ffibuilder"],
    ext_modules=[Extension("flowcept._fastcapture", ["csrc/pycapture.c", "csrc/msgpack_enc.c"],
                           include_dirs=["csrc"],
                           extra_compile_args=["-O2", "-Wall", "-Wextra", "-std=c11"])],
)
