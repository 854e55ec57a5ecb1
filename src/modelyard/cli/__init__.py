"""The ``modelyard`` command line (Typer + Rich): one module per command group."""
