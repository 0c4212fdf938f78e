"""Shared pytest fixtures (append yours; don't rewrite others')."""
from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _mlflow_store_outside_repo(tmp_path_factory):
    """CLI commands track to MLflow by default (sqlite:///mlflow.db in the working
    directory). Keep test runs from writing a store into the repository: unless the caller
    chose a store, point MLFLOW_TRACKING_URI to a session temp sqlite store. Tests of the
    default behaviour clear the variable themselves (monkeypatch.delenv)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        yield
        return
    d = tmp_path_factory.mktemp("mlflow-store")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{d / 'mlflow.db'}"
    try:
        yield
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
