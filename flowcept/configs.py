"""Flowcept's ``flowcept.configs`` import path (flowcept.compat.configs)."""
from flowcept.compat.configs import PROJECT_NAME, __dir__, __getattr__, validate_config  # noqa: F401
