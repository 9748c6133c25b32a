"""DVC's S3 remote against a real S3-compatible server on the loopback address (moto, started here).

The retrain flow's push task sends the pipeline's data and outputs; a fresh `git clone` pulls them.
Credentials come from the environment, as with AWS S3 or MinIO (docs/scale-out.md "Shared storage: S3").
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from conftest import free_port, run

pytestmark = pytest.mark.slow



@pytest.fixture()
def s3_endpoint(monkeypatch):
    import boto3
    from moto.server import ThreadedMotoServer

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=url).create_bucket(Bucket="dfd-artifacts")
    yield url
    server.stop()


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_retrain_push_and_fresh_clone_pull_round_trip_through_s3(repro_project, tmp_path, s3_endpoint):
    import boto3

    import flows.publish as publish
    import flows.retrain as rt

    work = tmp_path / "work"
    run(["git", "clone", "-q", str(repro_project), str(work)], tmp_path)
    run(["dvc", "cache", "dir", "--local", str(repro_project / ".dvc/cache")], work)  # the outputs to push
    run(["dvc", "remote", "add", "-d", "store", "s3://dfd-artifacts/dvc"], work)
    run(["dvc", "remote", "modify", "store", "endpointurl", s3_endpoint], work)
    run(["git", "commit", "-qam", "S3 remote"], work)

    remote, pull = rt.ensure_remote(str(work), "../unused")  # the configured default remote wins
    assert remote == "store" and pull == "dvc pull"  # it is in the committed .dvc/config: every clone knows it
    publish.dvc_push.fn(str(work), remote)  # the retrain flow's push task
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(
        Bucket="dfd-artifacts", Prefix="dvc/").get("Contents", [])]
    assert len(keys) > 80  # 80 demo images + pipeline outputs

    fresh = tmp_path / "fresh"
    run(["git", "clone", "-q", str(work), str(fresh)], tmp_path)
    run(["dvc", "pull", "-q"], fresh)
    for rel in ("artifacts/model/detector.pt", "reports/validation/data_docs/index.html"):
        assert _md5(fresh / rel) == _md5(repro_project / rel), rel

    def images(root: Path) -> dict[str, str]:
        return {p.relative_to(root).as_posix(): _md5(p) for p in (root / "data").rglob("*") if p.is_file()}

    assert len(images(fresh)) == 80 and images(fresh) == images(repro_project)
    status = run(["dvc", "status"], fresh).stdout  # every output came back with the pull
    assert "changed deps" not in status and "modified" not in status, status
