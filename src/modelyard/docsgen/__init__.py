"""Generators of the reference pages in ``docs/reference/`` from the code's own descriptions:
the HTTP API from the server's OpenAPI document, the CLI from the Typer app.
``python -m modelyard.docsgen`` rewrites them; ``--check`` says which are stale."""
