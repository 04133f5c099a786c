"""Fixtures of tests/adapters (helpers and fixtures live in adapters_support.py: a module name
of its own, since every test folder has a conftest)."""
from adapters_support import *  # noqa: F401,F403
