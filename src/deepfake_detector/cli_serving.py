"""`dfd serve` (+ `dfd serve keys add`) and `dfd registry`: the commands of the product side, as thin as cli.py's."""

from __future__ import annotations

from pathlib import Path

import typer

from .cli_common import PARAMS, _fail, _params, _show, console

serve_app = typer.Typer(help="HTTP API: POST /predict, GET /model, /health, /metrics, /docs; `keys add` for API keys.")


@serve_app.callback(invoke_without_command=True)
def serve(ctx: typer.Context,
          model: str = typer.Option("artifacts/model", help="model folder or registry ref (detector@prod)"),
          host: str = "127.0.0.1", port: int = 8000,
          max_mb: float = typer.Option(None, help="request body limit [serve.max_upload_mb]"),
          request_log: str = typer.Option(None, help="JSONL of served predictions, '' = off [serve.request_log]"),
          backend: str = typer.Option(None, help="torch | onnx [serve.backend]"),
          params: Path = PARAMS) -> None:
    """Serve the model (flags override params.yaml `serve`)."""
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from .serving.serve import build_server_app

    p = _params(params)
    overrides = {k: v for k, v in {"max_upload_mb": max_mb, "backend": backend}.items() if v is not None}
    try:
        app_ = build_server_app(model, p.serve.model_copy(update=overrides), p.decode_limits(), request_log,
                                p.faces.options())
    except (FileNotFoundError, ValueError, RuntimeError) as exc:  # RegistryError, KeysError, CheckpointError
        _fail(exc)
    uvicorn.run(app_, host=host, port=port, log_level="warning")


keys_app = typer.Typer(no_args_is_help=True, help="API keys of the service (serve.api_keys_file).")
serve_app.add_typer(keys_app, name="keys")


@keys_app.command("add")
def keys_add(name: str, params: Path = PARAMS) -> None:
    """Make a key named NAME: printed once (keep it), its sha256 stored in serve.api_keys_file."""
    from .serving.keys import KeysError, add_key

    s = _params(params).serve
    if not s.api_keys_file:
        _fail(ValueError("serve.api_keys_file is \"\" (keys off): set a path in params.yaml first"))
    try:
        key = add_key(s.api_keys_file, name)
    except KeysError as exc:
        _fail(exc)
    console.print(f"key {name!r} added to {s.api_keys_file}; it is shown only now:")
    print(key)


registry_app = typer.Typer(help="Model registry (GTO git tags): register, show, resolve.", no_args_is_help=True)


@registry_app.command("register")
def registry_register(version: str = typer.Option(None, help="vX.Y.Z; default: the next minor version"),
                      stage: str = typer.Option("prod", help="stage to assign ('' = none)"),
                      rev: str = typer.Option("HEAD", help="the commit whose dvc.lock names the model"),
                      name: str = "detector", push: bool = typer.Option(False, help="push the tags to origin")) -> None:
    """Register a commit's model as a new version and assign it a stage (gto register + gto assign)."""
    from .serving.registry import RegistryError, register

    try:
        _show(register(".", name, rev, version, stage or None, push=push))
    except RegistryError as exc:
        _fail(exc)


@registry_app.command("show")
def registry_show(name: str = typer.Argument(None)) -> None:
    """Versions and stages (runs `gto show`)."""
    import subprocess
    import sys

    gto = Path(sys.executable).with_name("gto")
    raise typer.Exit(subprocess.run([str(gto) if gto.exists() else "gto", "show", *([name] if name else [])]).returncode)


@registry_app.command("resolve")
def registry_resolve(ref: str) -> None:
    """The model folder and version a ref (detector@prod) names, fetched with dvc get when needed."""
    from .serving.registry import RegistryError, resolve

    try:
        path, version = resolve(ref, ".")
    except RegistryError as exc:
        _fail(exc)
    _show({"ref": ref, "version": version, "path": str(path)})
