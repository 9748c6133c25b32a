"""What every `dfd` command shares: the params option, loading params with a clear error, failing, printing."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

console = Console(stderr=True, soft_wrap=True)  # never wrap error messages
PARAMS = typer.Option(Path("params.yaml"), "--params", help="params file (typed schema)")


def _params(path: Path):
    from .core.params import ParamsError, load_params

    try:
        return load_params(path)
    except ParamsError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def _fail(exc: Exception) -> None:
    console.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(2)


def _show(obj: dict) -> None:
    print(json.dumps(obj, indent=2, default=str))
