"""Flowcept's MLflow interceptor: the ``mlflow`` adapter (flowcept.adapters.mlflow)."""
from flowcept.adapters.mlflow import MlflowAdapter as MLFlowInterceptor  # noqa: F401
