"""The typer app every command module registers on, the two consoles, and the entry point."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from stillhouse.core.errors import StillhouseError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Black-box LLM distillation with a provenance ledger.",
)

console = Console(stderr=True)  # progress, messages and errors
out = Console()  # results


def quiet_hf() -> None:
    """Our own progress bar says what is happening; HF's load/save bars would interleave with it."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def main() -> None:
    """Console entry point: every user error is one line on stderr (exit 2), never a traceback."""
    try:
        code = app(standalone_mode=False)  # click returns an Exit's code instead of exiting
        if isinstance(code, int) and code:
            sys.exit(code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        console.print("interrupted; everything received so far is saved, re-run the same command to resume")
        sys.exit(130)
    except typer.TyperException as e:  # a bad or missing option (click's UsageError): one line, and where to look
        ctx = getattr(e, "ctx", None)
        where = f"{ctx.command_path} --help" if ctx is not None else "stillhouse --help"
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        console.print(f"[red]error:[/red] {message} (see {where})", highlight=False, soft_wrap=True)
        sys.exit(2)
    except StillhouseError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted; everything received so far is saved, re-run the same command to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
