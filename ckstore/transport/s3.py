"""An S3 (or S3-compatible: MinIO, SeaweedFS, R2, ...) bucket as a remote, through `obstore`.

`s3://bucket/prefix` — every key lives under `prefix/`. Settings, first found wins:

* explicit arguments (`endpoint_url`, `region`, `profile`, `access_key_id`, `secret_access_key`, `session_token`);
* the environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_ENDPOINT_URL_S3`,
  `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_DEFAULT_REGION`, `AWS_CA_BUNDLE`;
* the profile `AWS_PROFILE` (or `default`) in `~/.aws/credentials` and `~/.aws/config`
  (`AWS_SHARED_CREDENTIALS_FILE`, `AWS_CONFIG_FILE`): static keys, `region`, `endpoint_url`, `ca_bundle`;
* when the profile has no static keys (or no profile is set) and boto3 is installed: boto3's credential chain for
  that profile — `credential_process`, SSO, assume-role (`role_arn` + `source_profile`), web identity, container
  and instance metadata — refreshed as it expires (`BotoCredentials`). Resolved once when the remote is opened, so
  a profile that gives nothing fails at once with an error naming the profile and the step that failed;
* without boto3: obstore's own discovery (web identity, container and instance credentials).

Plain `http://` endpoints are refused unless `allow_http` (`--allow-http`) or the host is loopback; https
certificates are verified against the system roots plus `ca_bundle` (a PEM file). `sse` (`AES256`, `aws:kms`,
`aws:kms:dsse`) and `sse_kms_key_id` ask S3 to encrypt every object written. Conditional writes are S3's own:
`If-None-Match: *` for `if_absent`, `If-Match: <etag>` for `if_match`. Transient failures (connection errors, 5xx, timeouts of
idempotent requests) are retried by obstore with exponential backoff, bounded by `max_retries` and
`retry_timeout`; what is still failing then is RemoteUnavailable.
"""

from __future__ import annotations

import configparser
import os
import re
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator
from urllib.parse import urlsplit

import obstore
from obstore import exceptions as obx
from obstore.store import S3Store

from ..errors import (
    RemoteAccessDenied,
    RemoteBucketMissing,
    RemoteError,
    RemoteNotFound,
    RemotePreconditionFailed,
    RemoteUnavailable,
    UsageError,
)
from ..model.urls import check_plain_http
from .base import Data, KeyStat, Transport, check_key, check_prefix, check_range

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-_]{1,254}$")
_CODE = re.compile(r"<Code>([^<]{1,100})</Code>")
_XML_MESSAGE = re.compile(r"<Message>([^<]{1,300})</Message>")
_STATUS = re.compile(r"status code: (\d{3})")
_CERT = re.compile(r"InvalidCertificate\(\s*([A-Za-z]{1,60})")
_DENIED_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                 "InvalidToken", "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem"}
_TRANSIENT_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling",
                    "RequestTimeTooSkewed"}
_TRANSIENT_TEXT = ("error sending request", "HTTP error", "connection", "Connection", "timed out", "timeout",
                   "dns error", "operation timed out", "broken pipe", "reset by peer")


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix"); UsageError for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in ("s3", "s3a") or not parts.netloc:
        raise UsageError(f"not an S3 URL: {url!r}", hint="write s3://BUCKET or s3://BUCKET/PREFIX")
    if parts.query or parts.fragment:
        raise UsageError(f"S3 URL {url!r} has a query or fragment; give settings as options instead")
    bucket = parts.netloc
    if not _BUCKET.match(bucket):
        raise UsageError(f"S3 URL {url!r}: {bucket!r} is not a valid bucket name")
    prefix = parts.path.strip("/")
    if prefix:
        check_key(prefix)
    return bucket, prefix


def _read_ini(path: str) -> configparser.RawConfigParser:
    cp = configparser.RawConfigParser()
    try:
        cp.read(os.path.expanduser(path), encoding="utf-8")
    except (configparser.Error, OSError, UnicodeDecodeError):
        pass
    return cp


def profile_name(profile: str | None, env: dict[str, str] | os._Environ = os.environ) -> str:
    """The AWS profile in use: `profile`, else AWS_PROFILE, else AWS_DEFAULT_PROFILE, else "default"."""
    return profile or env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE") or "default"


def profile_settings(profile: str | None, env: dict[str, str] | os._Environ = os.environ) -> dict[str, str]:
    """Settings of an AWS profile from the shared files: access_key_id, secret_access_key, session_token,
    region, endpoint_url, ca_bundle (only those present), and "exists" ("1") when either file has the profile.
    `profile` None means AWS_PROFILE, else "default"; a named profile found in neither file is a UsageError."""
    name = profile_name(profile, env)
    creds = _read_ini(env.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"))
    conf = _read_ini(env.get("AWS_CONFIG_FILE", "~/.aws/config"))
    found: dict[str, str] = {}
    sections = [(conf, name if name == "default" else f"profile {name}"), (conf, name), (creds, name)]
    for cp, section in sections:          # later sections win: credentials over config
        if cp.has_section(section):
            found["exists"] = "1"
            for opt, key in (("aws_access_key_id", "access_key_id"), ("aws_secret_access_key", "secret_access_key"),
                             ("aws_session_token", "session_token"), ("region", "region"),
                             ("endpoint_url", "endpoint_url"), ("ca_bundle", "ca_bundle")):
                v = cp.get(section, opt, fallback="").strip()
                if v:
                    found[key] = v
    if name != "default" and not found:
        raise UsageError(f"AWS profile {name!r} not found in {env.get('AWS_SHARED_CREDENTIALS_FILE', '~/.aws/credentials')}"
                         f" or {env.get('AWS_CONFIG_FILE', '~/.aws/config')}",
                         hint="fix AWS_PROFILE (or --profile), or add the profile")
    return found


# botocore's names for the steps of its credential chain, in words for error messages
_STEPS = {"env": "the environment variables", "assume-role": "assume-role (role_arn)",
          "assume-role-with-web-identity": "web identity", "sso": "SSO", "shared-credentials-file":
          "the shared credentials file", "custom-process": "credential_process", "config-file": "the config file",
          "container-role": "container credentials", "iam-role": "instance metadata"}


class BotoCredentials:
    """An obstore credential provider over boto3's chain for one profile: resolved once when made (so a profile
    that yields nothing fails when the remote is opened, naming the step), then asked again each `ttl` (boto3
    refreshes temporary credentials itself as they near expiry)."""

    def __init__(self, url: str, profile: str | None, region: str | None = None,
                 ttl: timedelta = timedelta(minutes=5)) -> None:
        import boto3
        import botocore.exceptions as bx
        self.ttl = ttl
        self.profile = profile_name(profile)
        where = f"S3 remote {url}: AWS profile {self.profile!r}"
        try:
            session = boto3.Session(profile_name=profile or None, region_name=region)  # STS needs a region
            self.credentials = session.get_credentials()
            frozen = self.credentials.get_frozen_credentials() if self.credentials is not None else None
        except bx.ProfileNotFound as exc:
            raise UsageError(f"{where} not found: {exc}", hint="fix AWS_PROFILE (or --profile)") from None
        except (bx.SSOTokenLoadError, bx.UnauthorizedSSOTokenError, bx.TokenRetrievalError) as exc:
            raise RemoteAccessDenied(f"{where}: the SSO step failed: {exc}", url=url,
                                     hint=f"run `aws sso login --profile {self.profile}`") from None
        except bx.CredentialRetrievalError as exc:
            provider = getattr(exc, "kwargs", {}).get("provider", "")
            step = _STEPS.get(provider, provider or "a credential provider")
            reason = str(getattr(exc, "kwargs", {}).get("error_msg", exc)).strip()
            raise RemoteAccessDenied(f"{where}: {step} failed: {reason}", url=url) from None
        except (bx.BotoCoreError, bx.ClientError) as exc:
            raise RemoteAccessDenied(f"{where}: resolving credentials failed ({type(exc).__name__}): "
                                     f"{str(exc).strip()}",
                                     url=url) from None
        if frozen is None or not frozen.access_key:
            raise RemoteAccessDenied(
                f"{where}: no credentials found. Tried: the environment (AWS_ACCESS_KEY_ID), static keys, "
                "credential_process, SSO and assume-role in the shared files, web identity, container and "
                "instance metadata", url=url,
                hint="set AWS_PROFILE or --profile to a profile with credentials, or AWS_ACCESS_KEY_ID and "
                     "AWS_SECRET_ACCESS_KEY")
        self.method = getattr(self.credentials, "method", "")

    def __call__(self) -> dict[str, Any]:
        """The current credentials in obstore's shape, valid for `ttl`."""
        frozen = self.credentials.get_frozen_credentials()
        return {"access_key_id": frozen.access_key, "secret_access_key": frozen.secret_key,
                "token": frozen.token, "expires_at": datetime.now(timezone.utc) + self.ttl}


def _boto3_installed() -> bool:
    try:
        import boto3  # noqa: F401
    except ImportError:
        return False
    return True


def _read_ca_bundle(path: str) -> str:
    try:
        with open(os.path.expanduser(path), encoding="ascii") as f:
            pem = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the CA bundle {path}: {exc}") from None
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise UsageError(f"the CA bundle {path} holds no PEM certificate")
    return pem


def _seconds(v: float | timedelta) -> timedelta:
    return v if isinstance(v, timedelta) else timedelta(seconds=float(v))


class S3Transport(Transport):
    """An S3 or S3-compatible bucket and prefix via obstore; credentials from arguments, environment or profile."""

    reads_in_flight = 8

    def __init__(self, url: str, *, endpoint_url: str | None = None, region: str | None = None,
                 profile: str | None = None, access_key_id: str | None = None,
                 secret_access_key: str | None = None, session_token: str | None = None,
                 allow_http: bool = False, ca_bundle: str | None = None, sse: str | None = None,
                 sse_kms_key_id: str | None = None, max_retries: int = 5, retry_timeout: float = 60.0,
                 connect_timeout: float = 5.0, timeout: float = 600.0,
                 s3_config: dict[str, Any] | None = None) -> None:
        self.bucket, self.prefix = parse_s3_url(url)
        self.url = f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
        env = os.environ
        prof = profile_settings(profile, env)
        config: dict[str, Any] = dict(s3_config or {})
        provider: BotoCredentials | None = None

        # credentials: explicit > environment (unless a profile was named) > profile; else obstore discovers
        self.region = region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or prof.get("region") \
            or "us-east-1"
        #: where the credentials come from, for messages: arguments, environment, profile ... or obstore
        self.credential_source = "environment"
        if access_key_id or secret_access_key:
            if not (access_key_id and secret_access_key):
                raise UsageError("give both access_key_id and secret_access_key, or neither")
            config.update(access_key_id=access_key_id, secret_access_key=secret_access_key)
            if session_token:
                config["token"] = session_token
            self.credential_source = "arguments"
        elif (profile or not env.get("AWS_ACCESS_KEY_ID")) and "access_key_id" in prof:
            config.update(access_key_id=prof["access_key_id"], secret_access_key=prof.get("secret_access_key", ""))
            if "session_token" in prof:
                config["token"] = prof["session_token"]
            self.credential_source = f"profile {profile_name(profile, env)} (static keys)"
        elif (profile or not env.get("AWS_ACCESS_KEY_ID")) and _boto3_installed():
            provider = BotoCredentials(f"s3://{self.bucket}", profile, self.region)
            self.credential_source = f"profile {provider.profile} via {provider.method or 'boto3'}"
        elif profile and "exists" in prof:
            raise UsageError(f"AWS profile {profile_name(profile, env)!r} has no static keys, and its "
                             "credential_process, SSO or assume-role needs boto3", hint="pip install boto3")
        elif not env.get("AWS_ACCESS_KEY_ID"):
            self.credential_source = "obstore's discovery"

        self.endpoint = (endpoint_url or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
                         or env.get("AWS_ENDPOINT") or prof.get("endpoint_url"))
        if self.endpoint:
            self.endpoint = self.endpoint.rstrip("/")
            config["endpoint"] = self.endpoint
        config["region"] = self.region
        if self.endpoint:
            check_plain_http(self.endpoint, allow_http, "the S3 endpoint")
        if sse:
            config["server_side_encryption"] = sse
            if sse_kms_key_id:
                config["sse_kms_key_id"] = sse_kms_key_id
        client: dict[str, Any] = {"allow_http": bool(self.endpoint and self.endpoint.startswith("http://")),
                                  "connect_timeout": _seconds(connect_timeout), "timeout": _seconds(timeout)}
        bundle = ca_bundle or env.get("AWS_CA_BUNDLE") or prof.get("ca_bundle")
        if bundle:
            client["root_certificate"] = _read_ca_bundle(bundle)
        retry = {"max_retries": int(max_retries), "retry_timeout": _seconds(retry_timeout),
                 "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=5),
                             "base": 2}}
        try:
            self._store = S3Store(self.bucket, prefix=self.prefix or None, config=config, client_options=client,
                                  retry_config=retry, credential_provider=provider)
        except (obx.BaseError, ValueError, TypeError) as exc:
            raise UsageError(f"cannot configure S3 remote {self.url}: {_summary(exc)}") from exc

    # ---------------------------------------------------------------- error mapping
    def _where(self, key: str | None) -> str:
        if not key:
            return self.url
        return f"{self.url}/{key}"

    def _map(self, exc: BaseException, op: str, key: str | None) -> RemoteError:
        text = str(exc)
        codes = set(_CODE.findall(text))
        status = _STATUS.findall(text)
        where = f"S3 {op} {self._where(key)}"
        summary = _summary(exc)
        kw = dict(url=self.url, key=key)
        at = f" at {self.endpoint}" if self.endpoint else ""
        cert = _CERT.search(text)
        if cert:
            return RemoteError(f"{where}: the server's TLS certificate is not trusted{at} ({cert.group(1)})", **kw,
                               hint="give --ca-bundle PEM with the CA that signed it (or set AWS_CA_BUNDLE)")
        if "NoSuchBucket" in codes:
            return RemoteBucketMissing(f"{where}: bucket {self.bucket!r} does not exist{at}", **kw)
        if isinstance(exc, (obx.AlreadyExistsError, obx.PreconditionError)):
            what = "already exists" if isinstance(exc, obx.AlreadyExistsError) else "changed (etag did not match)"
            return RemotePreconditionFailed(f"{where}: {what}", **kw)
        if isinstance(exc, (FileNotFoundError, obx.NotFoundError)):
            return RemoteNotFound(f"{self.url}: no key {key!r}", **kw)
        if isinstance(exc, (obx.PermissionDeniedError, obx.UnauthenticatedError)) or codes & _DENIED_CODES \
                or "403" in status or "401" in status:
            return RemoteAccessDenied(f"{where}: access denied{at}: {summary}", **kw)
        if not status and "credential" in text.lower():
            return RemoteAccessDenied(f"{where}: no usable credentials: {summary}", **kw)
        if codes & _TRANSIENT_CODES or any(s.startswith("5") or s == "429" for s in status) \
                or (not status and any(t in text for t in _TRANSIENT_TEXT)):
            return RemoteUnavailable(f"{where}: cannot reach the server{at}: {summary}", **kw)
        return RemoteError(f"{where} failed: {summary}", **kw)

    # ---------------------------------------------------------------- reads
    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        """The object's bytes, or a range GET for [start:end] (empty when it starts at or past the end)."""
        check_key(key)
        check_range(start, end)
        options: dict[str, Any] = {}
        if start is not None or end is not None:
            lo = start or 0
            if end is not None and end <= lo:
                return self._empty_range(key)
            options["range"] = (lo, end) if end is not None else {"offset": lo}
        try:
            result = obstore.get(self._store, key, options=options or None)
            return bytes(result.bytes())
        except Exception as exc:  # noqa: BLE001 - mapped at the boundary
            if "416" in _STATUS.findall(str(exc)) or "InvalidRange" in str(exc):
                return self._empty_range(key)     # start at or past the end
            raise self._map(exc, "GET", key) from exc

    def _empty_range(self, key: str) -> bytes:
        if self.stat(key) is None:
            raise self._not_found(key)
        return b""

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """The object's bytes and the server's ETag; RemoteError if the server sends none."""
        check_key(key)
        try:
            result = obstore.get(self._store, key)
            data = bytes(result.bytes())
            etag = result.meta.get("e_tag")
        except Exception as exc:  # noqa: BLE001
            raise self._map(exc, "GET", key) from exc
        if not etag:
            raise RemoteError(f"S3 GET {self._where(key)}: the server sent no ETag, so refs cannot move safely",
                              url=self.url, key=key)
        return data, etag

    def stat(self, key: str) -> KeyStat | None:
        """None for an absent key — and for a missing bucket, which HEAD cannot tell apart."""
        check_key(key)
        try:
            meta = obstore.head(self._store, key)
        except Exception as exc:  # noqa: BLE001
            mapped = self._map(exc, "HEAD", key)
            if isinstance(mapped, RemoteNotFound):
                return None
            raise mapped from exc
        return KeyStat(int(meta["size"]), meta.get("e_tag") or "")

    def list(self, prefix: str = "") -> Iterator[str]:
        """Every key under `prefix`, streamed page by page; listed names that are not valid keys are skipped."""
        return self._list(check_prefix(prefix))

    def _list(self, prefix: str) -> Iterator[str]:
        try:
            stream = obstore.list(self._store, prefix or None, chunk_size=1000)
            for batch in stream:
                for meta in batch:
                    k = meta["path"]
                    try:
                        check_key(k)
                    except UsageError:
                        continue                  # a name no key can have: not ours
                    yield k
        except Exception as exc:  # noqa: BLE001
            raise self._map(exc, "LIST", prefix) from exc

    # ---------------------------------------------------------------- writes
    def put(self, key: str, data: Data, *, if_absent: bool = False, if_match: str | None = None) -> str:
        """PUT `data`, create-only or If-Match when asked; returns the new ETag. RemotePreconditionFailed on a miss."""
        self._check_put_args(key, if_absent, if_match)
        mode: Any = "create" if if_absent else ({"e_tag": if_match} if if_match is not None else "overwrite")
        try:
            result = obstore.put(self._store, key, memoryview(data).cast("B"), mode=mode)
        except Exception as exc:  # noqa: BLE001
            mapped = self._map(exc, "PUT", key)
            if if_match is not None and isinstance(mapped, RemoteNotFound):
                mapped = RemotePreconditionFailed(f"S3 PUT {self._where(key)}: changed (the key is gone)",
                                                  url=self.url, key=key)
            raise mapped from exc
        etag = result.get("e_tag")
        if not etag:
            st = self.stat(key)
            etag = st.etag if st else ""
        return etag

    def delete(self, key: str) -> None:
        """DELETE the key; a missing key is not an error."""
        check_key(key)
        try:
            obstore.delete(self._store, key)
        except Exception as exc:  # noqa: BLE001
            mapped = self._map(exc, "DELETE", key)
            if not isinstance(mapped, RemoteNotFound):
                raise mapped from exc


def _summary(exc: BaseException) -> str:
    """One readable line out of obstore's multi-line message: the first line, the server's error code."""
    text = str(exc)
    head = text.split("\n\nDebug source", 1)[0].split("\n", 1)[0]
    head = head.split(": <?xml", 1)[0]
    code = _CODE.search(text)
    msg = _XML_MESSAGE.search(text)
    if code:
        head += f" [{code.group(1)}" + (f": {msg.group(1)}" if msg else "") + "]"
    return head[:500]
