"""Flowcept's ``flowcept.instrumentation.flowcept_torch``: PyTorch module
capture (implemented in flowcept.adapters.torch)."""
from flowcept.adapters.torch import FlowceptEpochLoop, flowcept_torch  # noqa: F401
