"""`dfd serve` (+ `dfd serve keys add`) and `dfd registry`: the commands of the product side, as thin as cli.py's."""

from __future__ import annotations

from pathlib import Path

import typer

from .cli_common import PARAMS, _fail, _params, _show, console

serve_app = typer.Typer(help="HTTP API: POST /predict, GET /model, /health, /ready, /metrics, /docs; `keys` for API "
                        "keys (add, list, revoke).")


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

    import logging

    p = _params(params)
    s = p.serve.model_copy(update={k: v for k, v in {"max_upload_mb": max_mb, "backend": backend}.items()
                                   if v is not None})
    if not s.api_keys_file and host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"[bold yellow]warning:[/] serving on {host} with no API keys (serve.api_keys_file): anyone "
                      "who reaches this port can use it. Add keys (`dfd serve keys add NAME`) and put TLS in front "
                      "(docs/use.md)")
    try:
        app_ = build_server_app(model, s, p.decode_limits(), request_log, p.faces.options())
    except (FileNotFoundError, ValueError, RuntimeError) as exc:  # RegistryError, KeysError, CheckpointError
        _fail(exc)
    from .serving.guard import log_access_to

    listener = log_access_to(logging.StreamHandler())  # one JSON line per request, refusals included, on stderr
    uvicorn.run(app_, host=host, port=port, log_level="warning", timeout_graceful_shutdown=int(s.drain_s) or None,
                limit_concurrency=4 * s.max_concurrency + 64)  # connections of every kind, a hard ceiling
    listener.stop()


keys_app = typer.Typer(no_args_is_help=True, help="API keys of the service (serve.api_keys_file).")
serve_app.add_typer(keys_app, name="keys")


@keys_app.command("add")
def keys_add(name: str, params: Path = PARAMS) -> None:
    """Make a key named NAME: printed once (keep it), its sha256 stored in serve.api_keys_file."""
    from .serving.keys import KeysError, add_key

    path = _keys_file(params)
    try:
        key = add_key(path, name)
    except KeysError as exc:
        _fail(exc)
    console.print(f"key {name!r} added to {path}; it is shown only now:")
    print(key)


@keys_app.command("list")
def keys_list(params: Path = PARAMS) -> None:
    """The names of the keys in serve.api_keys_file (never the keys)."""
    from .serving.keys import KeysError, list_keys

    try:
        names = list_keys(_keys_file(params))
    except KeysError as exc:
        _fail(exc)
    for name in names:
        print(name)


@keys_app.command("revoke")
def keys_revoke(name: str, params: Path = PARAMS) -> None:
    """Remove NAME's key: a running service refuses it from its next request on (no restart)."""
    from .serving.keys import KeysError, revoke_key

    try:
        revoke_key(_keys_file(params), name)
    except KeysError as exc:
        _fail(exc)
    console.print(f"key {name!r} revoked")


def _keys_file(params: Path) -> str:
    s = _params(params).serve
    if not s.api_keys_file:
        _fail(ValueError("serve.api_keys_file is \"\" (keys off): set a path in params.yaml first"))
    return s.api_keys_file


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
