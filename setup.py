"""Build script: the compiled parts are declared here, everything else in
pyproject.toml.  The cffi module hosts the ring/batch ABI of csrc/flowcept.h."""
from setuptools import setup

setup(
    cffi_modules=["flowcept/_build_ext.py:ffibuilder"],
)
