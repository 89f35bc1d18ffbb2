"""The `stillhouse` command: a thin layer over the Python API, one module per stage's commands.

Each module registers its commands on `stillhouse.cli.app.app`; importing them here builds the CLI.
"""

from stillhouse.cli import collect, curate, forensics, ledger, quickstart, serve, train  # noqa: F401  (registers commands)
from stillhouse.cli.app import app, main

__all__ = ["app", "main"]
