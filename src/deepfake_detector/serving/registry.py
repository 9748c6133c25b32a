"""Model registry with GTO: versions and stages are git tags, the artifact is declared in dvc.yaml.

    dfd registry register --stage prod            # tag HEAD detector@v0.(n+1).0, assign detector#prod#k
    dfd registry show                              # gto show: versions and stages
    dfd predict face.jpg --model detector@prod     # any command that takes a model takes a ref

A ref is `NAME@STAGE`, `NAME@vX.Y.Z` or `NAME@latest`. Resolving it finds the version's commit with
GTO, then the artifact folder at that commit (dvc.yaml `artifacts: NAME: path`) with `dvc get` from the
DVC cache or remote into .dfd/registry/NAME/VERSION; when that commit is the checked-out one and DVC
finds its outputs current, the workspace folder itself.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from ..core.gitrev import GitError, file_at

REF = re.compile(r"^(?P<name>[a-z][a-z0-9-]*)@(?P<spec>[A-Za-z0-9._+-]+)$")


class RegistryError(RuntimeError):
    """A ref that does not resolve, or a registry action that git/GTO/DVC refused."""


def is_ref(text: str) -> bool:
    return REF.match(text) is not None


def artifact_path(repo: str | Path, name: str, rev: str | None = None) -> str:
    """The folder dvc.yaml declares for artifact `name` (at `rev`, or in the workspace)."""
    try:
        text = file_at(rev, "dvc.yaml", repo) if rev else (Path(repo) / "dvc.yaml").read_text()
    except GitError as exc:
        raise RegistryError(str(exc)) from None
    artifacts = (yaml.safe_load(text or "") or {}).get("artifacts") or {}
    if name not in artifacts:
        raise RegistryError(f"dvc.yaml{'@' + rev[:10] if rev else ''} declares no artifact {name!r}")
    return artifacts[name]["path"]


def _git(repo: str | Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if out.returncode:
        raise RegistryError(f"git {' '.join(args)}: {out.stderr.strip()[-300:]}")
    return out.stdout


def find_version(repo: str | Path, name: str, spec: str) -> tuple[str, str]:
    """(version, commit) that `name@spec` names: a stage, a version, or `latest`."""
    from gto import api
    from gto.exceptions import ArtifactNotFound

    if spec == "latest":
        found = _latest(repo, name)
        if found is None:
            raise RegistryError(f"{name} has no registered version in {repo}: run `dfd registry register`")
        return found.version, found.commit_hexsha
    if re.match(r"^v\d+\.\d+\.\d+$", spec):
        tag = f"{name}@{spec}"
        try:
            return spec, _git(repo, "rev-list", "-n", "1", tag).strip()
        except RegistryError:
            raise RegistryError(f"no version {tag} in {repo} (see `gto show`)") from None
    try:
        in_stage = api.find_versions_in_stage(str(repo), name, spec)
    except ArtifactNotFound:
        in_stage = []
    if not in_stage:
        raise RegistryError(f"no version of {name} is in stage {spec!r} in {repo} (see `gto show`)")
    return in_stage[0].version, in_stage[0].commit_hexsha


def resolve(ref: str, repo: str | Path = ".") -> tuple[Path, str]:
    """(model folder, version) for a ref; the folder is fetched once into .dfd/registry/NAME/VERSION."""
    m = REF.match(ref)
    if m is None:
        raise RegistryError(f"{ref!r} is not a registry ref (NAME@STAGE, NAME@vX.Y.Z or NAME@latest)")
    repo = Path(repo).resolve()
    name, spec = m["name"], m["spec"]
    version, commit = find_version(repo, name, spec)
    path = artifact_path(repo, name, commit)
    dest = repo / ".dfd" / "registry" / name / version
    if (dest / "detector.pt").is_file() or any(dest.glob("*.json")):
        return dest, version
    got = subprocess.run(["dvc", "get", str(repo), path, "--rev", commit, "-o", str(dest)], cwd=repo,
                         capture_output=True, text=True)
    if got.returncode == 0:
        return dest, version
    if commit == _git(repo, "rev-parse", "HEAD").strip() and _workspace_current(repo):
        return repo / path, version
    raise RegistryError(f"{ref} = {version} (commit {commit[:10]}): {path} is in no DVC cache or remote "
                        f"({got.stderr.strip().splitlines()[-1] if got.stderr.strip() else 'dvc get failed'}); "
                        "run `dvc pull` where it was built")


def _workspace_current(repo: Path) -> bool:
    out = subprocess.run(["dvc", "status", "--json"], cwd=repo, capture_output=True, text=True)
    return out.returncode == 0 and out.stdout.strip() in ("{}", "")


def _latest(repo: str | Path, name: str):
    from gto import api
    from gto.exceptions import ArtifactNotFound

    try:
        return api.find_latest_version(str(repo), name)
    except ArtifactNotFound:  # no tag names it yet
        return None


def version_at(repo: str | Path, name: str, commit: str, stage: str | None = None) -> dict[str, str | None] | None:
    """The version of `name` registered at `commit` (and `stage` assigned to it, when asked), as `register`
    returns it; None when that commit carries no version. Registration is then once per commit."""
    tags = _git(repo, "tag", "--points-at", commit, "--list", f"{name}@v*").split()
    if not tags:
        return None
    version = sorted(tags, key=lambda t: [int(x) for x in t.split("@v")[1].split(".")])[-1].split("@")[1]
    if stage and not _git(repo, "tag", "--points-at", commit, "--list", f"{name}#{stage}#*").split():
        from gto import api

        api.assign(str(repo), name, stage, version=version, message=f"{name} {version} -> {stage}")
    return {"name": name, "version": version, "commit": commit, "stage": stage,
            "tags": f"{name}@{version}" + (f", {name}#{stage}#N" if stage else "")}


def next_version(repo: str | Path, name: str) -> str:
    """v0.1.0 for the first registration, then the next minor version."""
    latest = _latest(repo, name)
    if latest is None:
        return "v0.1.0"
    major, minor, _ = (int(x) for x in latest.version.lstrip("v").split("."))
    return f"v{major}.{minor + 1}.0"


def register(repo: str | Path = ".", name: str = "detector", rev: str = "HEAD", version: str | None = None,
             stage: str | None = "prod", message: str = "", push: bool = False) -> dict[str, str | None]:
    """Register `rev` as a new version of `name` (next minor unless given) and assign `stage` to it."""
    from gto import api

    repo = str(Path(repo).resolve())
    artifact_path(repo, name)  # a clear error before any tag is made
    version = version or next_version(repo, name)
    commit = _git(repo, "rev-parse", rev).strip()
    try:
        api.register(repo, name, commit, version=version, message=message or f"register {name} {version}",
                     push=push)
        if stage:
            api.assign(repo, name, stage, version=version, message=message or f"{name} {version} -> {stage}",
                       push=push)
    except Exception as exc:  # noqa: BLE001 - GTO raises its own types; one clear error for callers
        raise RegistryError(f"gto: {exc}") from exc
    return {"name": name, "version": version, "commit": commit, "stage": stage,
            "tags": f"{name}@{version}" + (f", {name}#{stage}#N" if stage else "")}
