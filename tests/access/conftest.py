"""Fixtures of tests/access (helpers and fixtures live in access_support.py: a module name
of its own, since every test folder has a conftest)."""
from access_support import *  # noqa: F401,F403
