"""Metadata (SQLAlchemy) and artifacts (fsspec): the yard's desired state."""
