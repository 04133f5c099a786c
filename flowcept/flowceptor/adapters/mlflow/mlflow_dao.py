"""Flowcept's MLflow DAO (implemented in flowcept.adapters.mlflow)."""
from flowcept.adapters.mlflow import MLFlowDAO  # noqa: F401
