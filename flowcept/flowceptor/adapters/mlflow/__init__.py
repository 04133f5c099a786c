"""Flowcept's MLflow interceptor import paths (implemented in flowcept.adapters.mlflow)."""
