"""Flowcept's ``flowcept.commons.utils`` import path (flowcept.compat.utils)."""
from flowcept.compat.utils import *  # noqa: F401,F403
from flowcept.compat.utils import __all__  # noqa: F401
