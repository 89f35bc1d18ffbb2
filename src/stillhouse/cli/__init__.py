"""The `stillhouse` command: a thin layer over the Python API, one module per stage's commands.

Each module registers its commands on `stillhouse.cli.app.app`; importing them here builds the CLI.
"""

# one module per stage or half; importing it registers its commands
from stillhouse.cli import (  # noqa: F401
    collect,
    curate,
    evaluate,
    forensics,
    gateway,
    ledger,
    provenance,
    quickstart,
    serve,
    train,
)
from stillhouse.cli.app import app, main

__all__ = ["app", "main"]
