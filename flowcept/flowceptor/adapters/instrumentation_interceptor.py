"""Flowcept's ``instrumentation_interceptor`` import path (flowcept.compat.controller)."""
from flowcept.compat.controller import InstrumentationInterceptor  # noqa: F401
