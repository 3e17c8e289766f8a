"""S3 in transit and the credentials teams use: plain http refused off loopback, TLS verified against a CA
bundle, server-side encryption asked of the server, and credentials from boto3's chain (credential_process,
assume-role through STS, SSO) with errors naming the profile and the step. Against moto in server mode: plain
on loopback, and over TLS with a certificate from a throwaway CA."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import numpy as np

from ckstore.errors import RemoteAccessDenied, RemoteError, UsageError
from ckstore.storage import remotes
from ckstore.transport import open_transport
from s3servers import BUCKET, free_port, s3_env
from conftest import make_safetensors, run_cli
from tlscerts import make_ca

pytest.importorskip("obstore")
boto3 = pytest.importorskip("boto3")


@pytest.fixture(scope="module")
def tls_moto(tmp_path_factory):
    """moto over https on loopback with a certificate signed by a new CA: (endpoint, CA bundle path)."""
    pytest.importorskip("cryptography")
    pytest.importorskip("moto")
    ca = make_ca(tmp_path_factory.mktemp("ca"))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port),
                             "-c", str(ca.server_cert), "-k", str(ca.server_key)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("moto over TLS did not start")
                time.sleep(0.1)
        endpoint = f"https://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing", verify=str(ca.ca_cert)).create_bucket(Bucket=BUCKET)
        yield endpoint, ca.ca_cert
    finally:
        proc.kill()
        proc.wait()


class Ran:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.exit_code, self.stdout, self.output = code, out, out + err


@pytest.fixture
def cli(capsys, monkeypatch):
    """`ckstore ARGS...` through the console script's entry point, in-process (errors printed as users see
    them); `ok` (default): it must succeed."""
    monkeypatch.setenv("CKSTORE_AUTHOR", "tester@ci")
    monkeypatch.delenv("CKSTORE_DIR", raising=False)

    def run(*args: object, ok: bool = True) -> Ran:
        code, out, err = run_cli(monkeypatch, capsys, *args)
        if ok:
            assert code == 0, (args, out, err)
        return Ran(code, out, err)
    return run


@pytest.fixture
def sample_checkpoint(tmp_path) -> Path:
    rng = np.random.default_rng(7)
    return make_safetensors(tmp_path / "model.safetensors",
                            {"w": rng.standard_normal((64, 64)).astype(np.float32), "b": np.arange(64.0)})


def _client(endpoint: str, verify=None):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing", verify=verify)


# ------------------------------------------------------------------------------------------------ plain http

def test_plain_http_refused_off_loopback(tmp_path, monkeypatch):
    s3_env(monkeypatch, tmp_path)
    with pytest.raises(UsageError, match="refusing plain http://.*unencrypted") as err:
        open_transport("s3://ckbucket/p", endpoint_url="http://10.1.2.3:9000")
    assert "--allow-http" in err.value.hint
    assert open_transport("s3://ckbucket/p", endpoint_url="http://10.1.2.3:9000", allow_http=True).endpoint
    for host in ("127.0.0.1", "127.8.9.10", "localhost", "[::1]"):     # loopback: exempt
        assert open_transport("s3://ckbucket/p", endpoint_url=f"http://{host}:9000").endpoint
    assert open_transport("s3://ckbucket/p", endpoint_url="https://10.1.2.3:9000").endpoint


def test_remote_settings_are_checked_when_added(tmp_path, monkeypatch):
    s3_env(monkeypatch, tmp_path)
    repo_dir = tmp_path / "repo"
    repo_dir.mkdir()
    with pytest.raises(UsageError, match="refusing plain http://"):
        remotes.add(repo_dir, "lan", "s3://ckbucket/p", endpoint_url="http://minio.lan:9000")
    assert remotes.load(repo_dir) == {}
    spec = remotes.add(repo_dir, "lan", "s3://ckbucket/p", endpoint_url="http://minio.lan:9000", allow_http=True,
                       sse="aws:kms", sse_kms_key_id="alias/ckstore", profile="team")
    assert remotes.load(repo_dir)["lan"] == spec
    assert spec.transport_options() == {"endpoint_url": "http://minio.lan:9000", "allow_http": True,
                                        "sse": "aws:kms", "sse_kms_key_id": "alias/ckstore", "profile": "team"}
    for bad, match in ((dict(profile="p"), "--profile does not apply"), (dict(sse="aws:kms"), "--sse does not"),
                       (dict(token_file=str(tmp_path)), "--token-file does not apply")):
        with pytest.raises(UsageError, match=match):
            remotes.add(repo_dir, "d", str(tmp_path / "dir"), **bad)
    with pytest.raises(UsageError, match="not a server-side encryption"):
        remotes.add(repo_dir, "x", "s3://ckbucket/p", sse="rot13")
    with pytest.raises(UsageError, match="needs --sse aws:kms"):
        remotes.add(repo_dir, "x", "s3://ckbucket/p", sse="AES256", sse_kms_key_id="k")
    with pytest.raises(UsageError, match="no such file"):
        remotes.add(repo_dir, "x", "s3://ckbucket/p", ca_bundle=str(tmp_path / "missing.pem"))
    with pytest.raises(UsageError, match="unknown remote setting"):
        remotes.add(repo_dir, "x", "s3://ckbucket/p", colour="blue")
    assert set(remotes.load(repo_dir)) == {"lan"}


def test_cli_remote_add_refuses_http_without_allow_http(tmp_path, monkeypatch, cli):
    s3_env(monkeypatch, tmp_path)
    monkeypatch.chdir(tmp_path)
    cli("init")
    r = cli("remote", "add", "lan", "s3://ckbucket/p", "--endpoint-url", "http://192.0.2.7:9000", ok=False)
    assert r.exit_code != 0 and "refusing plain http://" in r.output and "--allow-http" in r.output
    cli("remote", "add", "lan", "s3://ckbucket/p", "--endpoint-url", "http://192.0.2.7:9000", "--allow-http")
    listed = json.loads(cli("remote", "list", "--json").stdout)["remotes"]
    assert listed[0]["allow_http"] is True and listed[0]["endpoint_url"] == "http://192.0.2.7:9000"


# ------------------------------------------------------------------------------------------------ TLS

def test_tls_certificate_verified_against_the_ca_bundle(tls_moto, tmp_path, monkeypatch):
    endpoint, ca = tls_moto
    s3_env(monkeypatch, tmp_path)
    untrusting = open_transport("s3://ckbucket/tls", endpoint_url=endpoint, max_retries=0)
    with pytest.raises(RemoteError, match="TLS certificate is not trusted.*UnknownIssuer") as err:
        untrusting.put("k", b"data")
    assert "--ca-bundle" in err.value.hint
    assert _client(endpoint, verify=str(ca)).list_objects_v2(Bucket=BUCKET, Prefix="tls/").get("KeyCount") == 0
    t = open_transport("s3://ckbucket/tls", endpoint_url=endpoint, ca_bundle=str(ca), max_retries=0)
    t.put("k", b"data")
    assert t.get("k") == b"data"
    monkeypatch.setenv("AWS_CA_BUNDLE", str(ca))               # boto's variable works too
    assert open_transport("s3://ckbucket/tls", endpoint_url=endpoint, max_retries=0).get("k") == b"data"
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    with pytest.raises(UsageError, match="holds no PEM certificate"):
        open_transport("s3://ckbucket/tls", endpoint_url=endpoint, ca_bundle=str(not_pem))


def test_push_and_clone_over_tls_with_sse(tls_moto, tmp_path, monkeypatch, cli, sample_checkpoint):
    endpoint, ca = tls_moto
    s3_env(monkeypatch, tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    cli("init")
    cli("commit", str(sample_checkpoint), "-m", "v1")
    url = "s3://ckbucket/sse-push"
    cli("remote", "add", "origin", url, "--endpoint-url", endpoint, "--ca-bundle", str(ca), "--sse", "aws:kms",
        "--sse-kms-key-id", "arn:aws:kms:us-east-1:123456789012:key/ckstore-test")
    cli("push", "origin")
    s3 = _client(endpoint, verify=str(ca))
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="sse-push/")["Contents"]]
    assert any("/packs/" in k for k in keys) and any("/refs/" in k for k in keys)
    for key in keys:
        head = s3.head_object(Bucket=BUCKET, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms", key
        assert head["SSEKMSKeyId"].endswith("key/ckstore-test"), key
    r = cli("clone", url, str(tmp_path / "copy"), "--endpoint-url", endpoint, ok=False)
    assert r.exit_code != 0 and "not trusted" in r.output and not (tmp_path / "copy").exists()
    cli("clone", url, str(tmp_path / "copy"), "--endpoint-url", endpoint, "--ca-bundle", str(ca),
        "--checkout", str(tmp_path / "files"))
    assert (tmp_path / "files" / sample_checkpoint.name).read_bytes() == sample_checkpoint.read_bytes()


# ------------------------------------------------------------------------------------------------ credentials

def _profiles(tmp_path: Path, monkeypatch, config: str) -> None:
    """Only these profiles, no keys in the environment."""
    s3_env(monkeypatch, tmp_path)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    (tmp_path / "aws-config").write_text(config)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")     # no instance-metadata probe off EC2


def _process(tmp_path: Path, body: str) -> str:
    script = tmp_path / "creds.py"
    script.write_text(body)
    return f"{sys.executable} {script}"


def test_credential_process_profile(moto_endpoint, tmp_path, monkeypatch):
    ok = _process(tmp_path, 'import json; print(json.dumps({"Version": 1, "AccessKeyId": "testing", '
                            '"SecretAccessKey": "testing"}))')
    _profiles(tmp_path, monkeypatch, f"[profile proc]\ncredential_process = {ok}\n"
                                     "[profile broken]\ncredential_process = "
                                     f"{sys.executable} -c \"import sys; sys.exit('token service down')\"\n")
    t = open_transport("s3://ckbucket/proc", endpoint_url=moto_endpoint, profile="proc", max_retries=0)
    assert t.credential_source == "profile proc via custom-process"
    t.put("k", b"v")
    assert t.get("k") == b"v"
    monkeypatch.setenv("AWS_PROFILE", "proc")                  # the variable names it as well
    assert open_transport("s3://ckbucket/proc", endpoint_url=moto_endpoint).get("k") == b"v"
    with pytest.raises(RemoteAccessDenied, match="profile 'broken': credential_process failed.*token service down"):
        open_transport("s3://ckbucket/proc", endpoint_url=moto_endpoint, profile="broken")


def test_assume_role_profile_through_sts(moto_endpoint, tmp_path, monkeypatch):
    _profiles(tmp_path, monkeypatch, "[profile base]\naws_access_key_id = testing\naws_secret_access_key = testing\n"
                                     "[profile role]\nrole_arn = arn:aws:iam::123456789012:role/ckstore\n"
                                     "source_profile = base\n")
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto_endpoint)
    t = open_transport("s3://ckbucket/role", endpoint_url=moto_endpoint, profile="role", max_retries=0)
    assert t.credential_source == "profile role via assume-role"
    t.put("k", b"v")
    assert t.get("k") == b"v"


def test_credential_errors_name_the_profile_and_step(moto_endpoint, tmp_path, monkeypatch):
    _profiles(tmp_path, monkeypatch, "[profile sso]\nsso_start_url = https://example.invalid/start\n"
                                     "sso_region = us-east-1\nsso_account_id = 123456789012\n"
                                     "sso_role_name = ckstore\n[profile empty]\nregion = eu-west-1\n")
    monkeypatch.setenv("HOME", str(tmp_path))                  # no SSO token cache
    with pytest.raises(UsageError, match="AWS profile 'nope' not found"):
        open_transport("s3://ckbucket/x", endpoint_url=moto_endpoint, profile="nope")
    with pytest.raises(RemoteAccessDenied, match="profile 'sso'.*SSO") as err:
        open_transport("s3://ckbucket/x", endpoint_url=moto_endpoint, profile="sso")
    assert "aws sso login --profile sso" in err.value.hint
    with pytest.raises(RemoteAccessDenied, match="profile 'empty': no credentials found. Tried"):
        open_transport("s3://ckbucket/x", endpoint_url=moto_endpoint, profile="empty")


def test_cli_push_names_the_failing_profile(moto_endpoint, tmp_path, monkeypatch, cli, sample_checkpoint):
    _profiles(tmp_path, monkeypatch, "[profile empty]\nregion = us-east-1\n")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    cli("init")
    cli("commit", str(sample_checkpoint), "-m", "v1")
    cli("remote", "add", "origin", "s3://ckbucket/cli-profile", "--endpoint-url", moto_endpoint, "--profile", "empty")
    r = cli("push", "origin", ok=False)
    assert r.exit_code != 0 and "profile 'empty': no credentials found" in r.output
    assert "Traceback" not in r.output
    keys = _client(moto_endpoint).list_objects_v2(Bucket=BUCKET, Prefix="cli-profile/").get("KeyCount")
    assert keys == 0
