"""`dfd`: one thin command per pipeline stage. Paths come from argv (dvc.yaml), settings from params.yaml.

    dfd data demo data/                 dfd data import SRC data/
    dfd validate data artifacts/clean reports/validation
    dfd split artifacts/clean artifacts/splits reports/split
    dfd train artifacts/splits artifacts/model reports/train [--resume] [--dry-run]
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from .cli_common import PARAMS, _fail, _params, _show, console
from .cli_serving import registry_app, serve_app

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="Deepfake face-image detector pipeline.")
data_app = typer.Typer(no_args_is_help=True, help="Create or import raw data under data/.")
app.add_typer(data_app, name="data")
app.add_typer(serve_app, name="serve")  # dfd serve, dfd serve keys add (cli_serving.py)
app.add_typer(registry_app, name="registry")  # dfd registry register|show|resolve


@data_app.command("demo")
def data_demo(out: Path = typer.Argument(Path("data")), per_class: int = 160, seed: int = 0) -> None:
    """Write the deterministic synthetic demo set (same bytes every time)."""
    from .data.demo import make_demo

    _show(make_demo(out, per_class, seed))


@data_app.command("import")
def data_import(src: Path, dest: Path = typer.Argument(Path("data")),
                source: str = typer.Option(None, help="source name: files go to DEST/<label>/NAME/, recorded in "
                                                      "DEST/metadata.csv"),
                groups: Path = typer.Option(None, help="CSV: path (relative to SRC) + a group column, e.g. video"),
                group_column: str = typer.Option(None, help="the group column of --groups (default: the only one)")) -> None:
    """Copy a labelled dataset (real/+fake/, Kaggle 140k, ciplab) into DEST, bytes and names kept."""
    from .data.importer import ImportLayoutError, import_dataset

    try:
        _show(import_dataset(src, dest, source, groups, group_column))
    except ImportLayoutError as exc:
        _fail(exc)
    console.print(f"next: dvc add {dest}")


@app.command()
def validate(data: Path, clean: Path, reports: Path, params: Path = PARAMS,
             cache: Path = typer.Option(None, help="per-file results cache (jsonl, keyed by sha256)"),
             workers: int = typer.Option(0, min=0, help="processes for the per-file pass (0 = every core)"),
             reference: Path = typer.Option(None, help="images already in the dataset (a manifest.csv or a data "
                                                       "folder): files repeating or contradicting them are rejected"),
             label_judge: str = typer.Option(None, help="a trained model (folder or registry ref, detector@prod) "
                                                        "as the label judge, instead of the out-of-fold one"),
             progress: bool = True) -> None:
    """Validate every image with Great Expectations; write the cleaned dataset."""
    from .core.images import DataLayoutError
    from .data.validate import load_reference, validate as run
    from .model.embeddings import embed_files

    p = _params(params)
    judge, name = None, ""
    if label_judge:
        from .serving.detector import Detector
        from .serving.registry import RegistryError

        try:
            det = Detector.load(label_judge, params=params)
        except (FileNotFoundError, RegistryError, RuntimeError) as exc:
            _fail(exc)
        judge, name = det.fake_probabilities, f"{label_judge} ({det.version})"
    try:
        ref = load_reference(reference, p.validate_, p.decode_limits(), cache) if reference else None
        _show(run(data, clean, reports, p.validate_, p.decode_limits(), p.seed, cache, progress, workers,
                  embed=embed_files, reference=ref, judge=judge, judge_name=name, faces=p.faces))
    except DataLayoutError as exc:
        _fail(exc)


@app.command()
def split(clean: Path, out: Path, reports: Path, params: Path = PARAMS) -> None:
    """Deterministic stratified train/val/test split, near-duplicates kept together."""
    from .data.split import split as run

    p = _params(params)
    try:
        _show(run(clean, out, reports, p.split, p.seed))
    except (FileNotFoundError, ValueError) as exc:
        _fail(exc)


@app.command()
def train(splits: Path, model: Path, reports: Path, params: Path = PARAMS,
          checkpoints: Path = typer.Option(Path("artifacts/checkpoints"), help="resumable last.pt lives here"),
          resume: bool = typer.Option(False, help="continue from checkpoints/last.pt"),
          dry_run: bool = typer.Option(False, help="2 batches per epoch (smoke test)"),
          run_log: Path = typer.Option(Path("artifacts/logs/train.json"), help="timings (not DVC-tracked)"),
          log_seen: bool = typer.Option(False, help="record the rows each rank trained on in its run log"),
          cache_dir: Path = typer.Option(Path("artifacts/cache/train"),
                                         help="decoded-image shards when the data exceed train.cache_ram_gb"),
          progress: bool = True) -> None:
    """Train the hybrid GAN (model.backbone); the discriminator is the detector.

    Several GPUs or machines: launch with torchrun (docs/scale-out.md "Several GPUs"); one process per GPU.
    """
    from .model.train import train as run

    p = _params(params)
    try:
        card = run(splits, model, reports, p, ckpt_dir=checkpoints, resume=resume, dry_run=dry_run,
                   progress=progress, run_log=run_log, log_seen=log_seen, cache_dir=cache_dir)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:  # CheckpointError (resume refused) included
        _fail(exc)
    if "val_metrics" in card:  # rank 0 (ranks > 0 only write their run log)
        _show({"best_epoch": card["best_epoch"], "val": card["val_metrics"]})


@app.command()
def baselines(splits: Path, out: Path, reports: Path, params: Path = PARAMS,
              checkpoints: Path = typer.Option(Path("artifacts/baseline_checkpoints")),
              run_logs: Path = typer.Option(Path("artifacts/logs"), help="timings per baseline (not DVC-tracked)"),
              dry_run: bool = False, progress: bool = True) -> None:
    """Train the comparison models (plain backbone, GAN-off ablation, frozen probe, spectrum + LR)."""
    from .evaluation.baselines import run_baselines

    p = _params(params)
    try:
        _show(run_baselines(splits, out, reports, p, checkpoints, progress, dry_run, log_dir=run_logs))
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        _fail(exc)


@app.command()
def evaluate(paths: list[Path] = typer.Argument(..., help="MODEL SPLITS OUT, or OUT with --model/--data"),
             model: Path = typer.Option(None, help="model dir (with --data)"),
             data: Path = typer.Option(None, help="any labelled folder with real/ and fake/"),
             baselines: Path = typer.Option(None, help="dir of baseline models to score alongside"),
             robustness: bool = typer.Option(True, help="also score under JPEG/resize/blur/noise (decoded once)"),
             params: Path = PARAMS, device: str = "cpu", progress: bool = True) -> None:
    """Score the detector on the test split (or any labelled folder): metrics, robustness, summary."""
    from .model.checkpoint import CheckpointError
    from .evaluation.evaluate import evaluate as run
    from .core.images import DataLayoutError

    p = _params(params)
    if data is not None:
        if model is None or len(paths) != 1:
            _fail(ValueError("with --data give --model and exactly one OUT path"))
        kwargs = dict(model_dir=model, out_dir=paths[0], data_dir=data)
    elif len(paths) == 3:
        kwargs = dict(model_dir=paths[0], splits_dir=paths[1], out_dir=paths[2])
    else:
        _fail(ValueError("usage: dfd evaluate MODEL SPLITS OUT  |  dfd evaluate --model M --data DIR OUT"))
    try:
        m = run(**kwargs, limits=p.decode_limits(), e=p.evaluate, baselines_dir=baselines, device=device,
                progress=progress, robustness=robustness, finder=p.faces.finder())
    except (FileNotFoundError, ValueError, CheckpointError, DataLayoutError) as exc:
        _fail(exc)
    _show({k: v for k, v in m.items() if k != "by_source"})


@app.command()
def drift(out: Path, reference: Path = typer.Option(..., help="split CSV or folder (training-like data)"),
          current: Path = typer.Option(..., help="split CSV or folder (new data, e.g. a landing folder)"),
          model: Path = typer.Option(None, help="detector dir for embeddings + fake probability"),
          params: Path = PARAMS, progress: bool = True) -> None:
    """Evidently drift report: image statistics + detector embeddings. Exit 0 with or without drift."""
    from .model.checkpoint import CheckpointError
    from .evaluation.drift import drift as run

    p = _params(params)
    try:
        m = run(reference, current, out, p.drift, p.decode_limits(), model, progress, p.faces.finder())
    except (FileNotFoundError, ValueError, CheckpointError) as exc:
        _fail(exc)
    _show({k: v for k, v in m.items() if k != "columns"})


@app.command()
def predict(paths: list[str] = typer.Argument(..., help="files, folders or globs"),
            model: str = typer.Option("artifacts/model", help="model folder or registry ref (detector@prod)"),
            format: str = typer.Option("table", help="table | json | csv"),
            band: float = typer.Option(None, help="'uncertain' when |p - threshold| < band [serve.uncertainty_band]"),
            batch_size: int = typer.Option(None, min=1, help="images per forward pass [serve.batch_size]"),
            explain: Path = typer.Option(None, help="write Grad-CAM overlays (PNG) here"),
            runtime: str = typer.Option("torch", help="torch | onnx (uses MODEL/detector.onnx)"),
            params: Path = PARAMS, progress: bool = True) -> None:
    """One row per face found in each picture (its box, fake probability, label; `verdict` marks the picture's
    most suspicious face); a picture with no face: status no_face. Exit 1 if any file could not be read."""
    import csv
    import sys

    from .model.checkpoint import CheckpointError
    from .serving.predict import FACE_FIELDS, predict as run
    from .serving.registry import RegistryError

    if format not in ("table", "json", "csv") or runtime not in ("torch", "onnx"):
        _fail(ValueError("--format is table|json|csv and --runtime is torch|onnx"))
    _params(params)  # a clear error for a missing or invalid params file, before any model loads
    try:  # band and batch size: the flags, else params.yaml `serve` (resolved by Detector.load)
        rows = run(paths, model, band, explain, runtime, progress=progress, batch_size=batch_size, params=params)
    except (CheckpointError, FileNotFoundError, RegistryError) as exc:
        _fail(exc)
    cols = (["path", "status", "n_faces", "face", "box", "verdict", *FACE_FIELDS, "model_version", "error"]
            + (["explanation"] if explain else []))
    if format == "json":
        print(json.dumps(rows, indent=2))
    elif format == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=cols, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    else:
        from rich.table import Table

        table = Table(*cols)
        for r in rows:
            table.add_row(*[str(r.get(c, "")) for c in cols])
        Console().print(table)
    if any("error" in r for r in rows):
        raise typer.Exit(1)


@app.command()
def export(model: str = typer.Argument("artifacts/model", help="model folder or registry ref (detector@prod)"),
           onnx: Path = typer.Option(None, help="output .onnx path [MODEL/detector.onnx: what serve.backend onnx runs]")
           ) -> None:
    """Export the detector to ONNX (atomically); reports the max |torch - onnxruntime| logit difference."""
    from .model.checkpoint import CheckpointError
    from .serving.export import export_onnx
    from .serving.registry import RegistryError, model_folder

    try:
        folder = model_folder(model)
        _show(export_onnx(folder, onnx or folder / "detector.onnx"))
    except (CheckpointError, RegistryError) as exc:
        _fail(exc)


@app.command()
def gate(challenger: Path = typer.Option(..., help="new model dir"),
         champion: Path = typer.Option(None, help="accepted model dir (omit for a first model)"),
         splits: Path = typer.Option(..., help="splits dir: both models are scored on its test.csv"),
         out: Path = typer.Option(None, help="write the JSON gate record here"), params: Path = PARAMS) -> None:
    """Champion/challenger decision on the same test images (paired bootstrap; flows.gate in params)."""
    from .evaluation.gate import compare

    p = _params(params)
    try:
        record = compare(challenger, champion, splits, p.flows.gate, p.decode_limits(), p.evaluate.bootstrap)
    except (FileNotFoundError, ValueError) as exc:
        _fail(exc)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2, default=float) + "\n")
    _show(record)
    if not record["promoted"]:
        raise typer.Exit(1)


@app.command("metrics-diff")
def metrics_diff(base: str = typer.Option("HEAD", help="git revision to compare with")) -> None:
    """Markdown table of metric changes vs BASE, each marked inside/outside the base's 95 % CI."""
    from .evaluation.review import metrics_diff as run

    try:
        print(run(base), end="")
    except FileNotFoundError as exc:
        _fail(exc)


@app.command("plots-template")
def plots_template(out: Path = typer.Argument(Path(".dvc/plots_offline.html"))) -> None:
    """Write the offline HTML template for `dvc plots show/diff` (Vega inlined; set by .dvc/config)."""
    from .evaluation.review import offline_plots_template

    console.print(f"wrote {offline_plots_template(out)}")


params_app = typer.Typer(no_args_is_help=True, help="Settings: apply a profile (an override file) to params.yaml.")
app.add_typer(params_app, name="params")


@params_app.command("apply")
def params_apply(profile: Path, params: Path = PARAMS) -> None:
    """Write PROFILE's values into params.yaml in place (layout and comments kept); validated first."""
    from .core.params import ParamsError, apply_profile

    try:
        changed = apply_profile(params, profile)
    except ParamsError as exc:
        _fail(exc)
    console.print(f"{params}: set {', '.join(changed) or 'nothing'} from {profile}")


weights_app = typer.Typer(no_args_is_help=True, help="ImageNet weights for the backbones (never fetched implicitly).")
app.add_typer(weights_app, name="weights")


@weights_app.command("show")
def weights_show() -> None:
    """Where each backbone's ImageNet weights are, or why they are missing."""
    from .model.pretrained import WeightsNotFound, resolve_weights

    out = {}
    for backbone in ("efficientnet_lite0", "se_resnet34"):
        try:
            out[backbone] = str(resolve_weights(backbone, "imagenet"))
        except WeightsNotFound as exc:
            out[backbone] = f"missing: {exc}"
    _show(out)


@weights_app.command("fetch")
def weights_fetch(backbone: str = typer.Argument(..., help="se_resnet34 | efficientnet_lite0")) -> None:
    """Download torchvision's ResNet34 ImageNet file into $TORCH_HOME (needs internet)."""
    from .model.pretrained import WeightsNotFound, fetch

    try:
        console.print(f"weights: {fetch(backbone)}")
    except (WeightsNotFound, ValueError) as exc:
        _fail(exc)


def main() -> None:  # pragma: no cover
    app()
