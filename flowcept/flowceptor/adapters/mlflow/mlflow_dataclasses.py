"""Flowcept's MLflow dataclasses (implemented in flowcept.adapters.mlflow)."""
from flowcept.adapters.mlflow import MLFlowSettings, RunData  # noqa: F401
