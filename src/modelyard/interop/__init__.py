"""Bringing models in from other tools (``interop.mlflow``: models MLflow logged).

Each module imports its tool lazily, so Modelyard works without any of them installed.
"""
