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
    found = stage_version(repo, name, spec)
    if found is None:
        raise RegistryError(f"no version of {name} is in stage {spec!r} in {repo} (see `gto show`)")
    return found


def _versions_by_commit(repo: str | Path, name: str) -> tuple[dict[str, list[str]], set[str]]:
    """({commit: [versions registered there]}, {deregistered versions}) from the tags name@vX.Y.Z[!]."""
    at: dict[str, list[str]] = {}
    gone = set()
    out = _git(repo, "for-each-ref", f"refs/tags/{name}@v*", "--format=%(refname:strip=2) %(*objectname) %(objectname)")
    for line in out.splitlines():
        tag, peeled, obj = (line.split() + [""])[:3]
        version = tag.split("@", 1)[1]
        if version.endswith("!"):
            gone.add(version.rstrip("!"))
        elif re.match(r"^v\d+\.\d+\.\d+$", version):
            at.setdefault(peeled or obj, []).append(version)
    return at, gone


def stage_version(repo: str | Path, name: str, stage: str) -> tuple[str, str] | None:
    """(version, commit) that the most recent assignment put in `stage`: GTO numbers every stage event of an
    artifact (tags name#stage#N, and name#stage!#N to unassign), so the highest N is the latest. A version
    deprecated since (name@vX!) is skipped, and the stage falls back to the assignment before it. So a rollback is
    `gto assign NAME OLD_VERSION STAGE --force` (or deprecating the newer version), whatever the semver order:
    GTO's own `which` picks the highest semver in a stage, where a rollback would not take effect."""
    out = _git(repo, "for-each-ref", f"refs/tags/{name}#{stage}*", "--format=%(refname:strip=2) %(*objectname) %(objectname)")
    events = []
    for line in out.splitlines():
        tag, peeled, obj = (line.split() + [""])[:3]
        m = re.match(rf"^{re.escape(name)}#{re.escape(stage)}(!?)#(\d+)$", tag)
        if m:
            events.append((int(m[2]), m[1] == "!", peeled or obj))
    at, gone = _versions_by_commit(repo, name)
    undone: set[str] = set()
    for _, unassign, commit in sorted(events, reverse=True):
        if unassign:
            undone.add(commit)
            continue
        live = [v for v in at.get(commit, []) if v not in gone]
        if commit not in undone and live:
            return max(live, key=lambda v: [int(x) for x in v[1:].split(".")]), commit
    return None


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


def model_folder(model: str | Path, repo: str | Path = ".") -> Path:
    """The folder a model argument names: itself when it exists, else the folder of a registry ref."""
    return resolve(str(model), repo)[0] if is_ref(str(model)) and not Path(model).exists() else Path(model)


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
    """v0.1.0 for the first registration, then the next minor version after the highest ever tagged: deprecated
    (deregistered) versions count too, since GTO refuses a number whose tag exists."""
    seen = []
    for tag in _git(repo, "tag", "--list", f"{name}@v*").split():
        m = re.match(rf"^{re.escape(name)}@v(\d+)\.(\d+)\.(\d+)", tag)
        if m:
            seen.append(tuple(int(x) for x in m.groups()))
    if not seen:
        return "v0.1.0"
    major, minor, _ = max(seen)
    return f"v{major}.{minor + 1}.0"


def push_tags(repo: str | Path, name: str, commit: str, remote: str = "origin") -> list[str]:
    """Push the registry tags of `name` that point at `commit` (its version and stage assignments): the
    registration is only seen by other clones once these are on the remote."""
    tags = [t for t in _git(repo, "tag", "--points-at", commit).split() if t.startswith((f"{name}@", f"{name}#"))]
    if tags:
        _git(repo, "push", "-q", remote, *[f"refs/tags/{t}" for t in tags])
    return tags


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
