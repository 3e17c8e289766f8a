"""The remotes a repository knows: `.ckstore/remotes.json`.

    {"origin": {"url": "s3://bucket/models", "endpoint_url": null, "region": null,
                "partial": null | {"tensors": ["glob", ...], "depth": N},
                "profile": null, "allow_http": false, "ca_bundle": null, "sse": null, "sse_kms_key_id": null,
                "token_file": null}}

The transport settings (`SETTINGS`) are checked against the URL's kind when a remote is added: S3's (endpoint,
region, profile, server-side encryption) only for s3://, a token file only for a served remote (https://,
ckstore://); `allow_http` and `ca_bundle` for both. Plain `http://` is refused unless `allow_http` is set, except
to a loopback host (the transports check it again, whatever opened them).

`partial` is set by a partial clone: only the chunks of tensors matching one of the globs were fetched (an empty
list: metadata only; no "tensors": every tensor), of the newest `depth` commits of each branch (default 1: the
tips); the rest is fetched on demand by checkout, cat and load.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import AlreadyExists, UsageError
from ..fs.fileio import write_atomic
from ..fs.locks import file_lock
from ..model.refnames import check_ref_name
from ..model.urls import check_plain_http

FILENAME = "remotes.json"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


@dataclass(frozen=True)
class RemoteSpec:
    """A remote as remotes.json records it: name, URL, S3 endpoint and region, and the partial-clone globs."""

    name: str
    url: str
    endpoint_url: str | None = None
    region: str | None = None
    partial: dict | None = None
    profile: str | None = None
    allow_http: bool = False
    ca_bundle: str | None = None
    sse: str | None = None
    sse_kms_key_id: str | None = None
    token_file: str | None = None

    def to_dict(self) -> dict:
        """All fields as a dict."""
        return asdict(self)

    def describe_partial(self) -> str:
        """What a partial clone fetched, for people ("" for a full one): the globs or "metadata only", and the
        depth when one was asked for."""
        if self.partial is None:
            return ""
        parts = []
        if "tensors" in self.partial:
            parts.append(", ".join(self.partial["tensors"]) or "metadata only")
        if "depth" in self.partial:
            parts.append(f"depth {self.partial['depth']}")
        return "; ".join(parts)

    def settings(self) -> dict[str, Any]:
        """Its transport settings (`SETTINGS`), those set only."""
        return {k: getattr(self, k) for k in SETTINGS if getattr(self, k)}

    def transport_options(self) -> dict[str, Any]:
        """The keyword arguments for opening its transport: the settings set, `allow_http` always for S3 and
        served remotes (so an `http://` endpoint is refused unless this remote allows it)."""
        opts = self.settings()
        if url_kind(self.url) in ("s3", "http"):
            opts["allow_http"] = self.allow_http
        return opts


SETTINGS = ("endpoint_url", "region", "profile", "allow_http", "ca_bundle", "sse", "sse_kms_key_id", "token_file")
_S3_ONLY = {"endpoint_url", "region", "profile", "sse", "sse_kms_key_id"}
_SSE = ("AES256", "aws:kms", "aws:kms:dsse")


def url_kind(url: str) -> str:
    """"s3", "http" (a served remote: http://, https://, ckstore://), "memory" or "directory"."""
    scheme = url.split("://", 1)[0].lower() if _SCHEME.match(url) else ""
    return {"s3": "s3", "s3a": "s3", "http": "http", "https": "http", "ckstore": "http",
            "memory": "memory"}.get(scheme, "directory")


def check_settings(url: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The transport settings for a remote at `url`, normalised (paths made absolute, empty values dropped);
    UsageError for an unknown setting, one this kind of remote has no use for, or a bad value."""
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        raise UsageError(f"unknown remote setting(s): {', '.join(sorted(unknown))}",
                         hint=f"known: {', '.join(SETTINGS)}")
    out = {k: v for k, v in settings.items() if v not in (None, "", False)}
    kind = url_kind(url)
    for k in out:
        if (k in _S3_ONLY and kind != "s3") or (k == "token_file" and kind != "http") \
                or (k in ("allow_http", "ca_bundle") and kind not in ("s3", "http")):
            flag = "--" + k.replace("_", "-")
            raise UsageError(f"{flag} does not apply to {url!r}",
                             hint="S3 settings go with s3:// remotes, a token file with served (https://) ones")
    if "allow_http" in out and out["allow_http"] is not True:
        raise UsageError(f"allow_http is true or false, not {out['allow_http']!r}")
    for k in ("ca_bundle", "token_file"):
        if k in out:
            path = os.path.abspath(os.path.expanduser(str(out[k])))
            if not os.path.isfile(path):
                raise UsageError(f"--{k.replace('_', '-')} {out[k]}: no such file")
            out[k] = path
    if "endpoint_url" in out:
        check_plain_http(out["endpoint_url"], bool(out.get("allow_http")), "the S3 endpoint")
    if kind == "http":
        check_plain_http(url, bool(out.get("allow_http")), "the served remote")
    if "sse" in out and out["sse"] not in _SSE:
        raise UsageError(f"--sse {out['sse']!r}: not a server-side encryption S3 knows",
                         hint=f"one of {', '.join(_SSE)}")
    if "sse_kms_key_id" in out and not str(out.get("sse", "")).startswith("aws:kms"):
        raise UsageError("--sse-kms-key-id needs --sse aws:kms (or aws:kms:dsse)")
    return out


def check_remote_name(name: str) -> str:
    """The name if it is a valid ref name without "/"; raises UsageError otherwise."""
    if not isinstance(name, str) or "/" in name:
        raise UsageError(f"invalid remote name {name!r}", hint="use letters, digits, '-', '_' and '.'")
    return check_ref_name(name)


def normalize_url(url: str) -> str:
    """A URL with a scheme is kept; a plain path becomes absolute (commands may run from elsewhere later)."""
    url = str(url)
    if not url:
        raise UsageError("empty remote URL")
    if _SCHEME.match(url):
        return url
    return os.path.abspath(os.path.expanduser(url))


def check_partial(partial: Any) -> dict | None:
    """The partial setting normalised to None or {"tensors": [globs], "depth": N} (either key may be absent, not
    both); raises UsageError for anything else."""
    if partial is None:
        return None
    globs = partial.get("tensors") if isinstance(partial, dict) else None
    depth = partial.get("depth") if isinstance(partial, dict) else None
    if not isinstance(partial, dict) or set(partial) - {"tensors", "depth"} or not partial \
            or (globs is not None and not (isinstance(globs, list) and all(isinstance(g, str) for g in globs))) \
            or (depth is not None and not (type(depth) is int and depth >= 1)):
        raise UsageError(f"{FILENAME}: 'partial' must be null or {{\"tensors\": [glob, ...], \"depth\": N}} (N >= 1, "
                         f"either key alone), not {partial!r}")
    out: dict = {}
    if globs is not None:
        out["tensors"] = list(globs)
    if depth is not None:
        out["depth"] = depth
    return out


def _path(repo_dir: Path) -> Path:
    return repo_dir / FILENAME


def load(repo_dir: Path) -> dict[str, RemoteSpec]:
    """Every remote in remotes.json by name ({} when there is no file); raises UsageError if the file is bad."""
    path = _path(repo_dir)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} is not readable JSON: {exc}", hint="fix or delete the file") from None
    if not isinstance(raw, dict):
        raise UsageError(f"{path} must hold a JSON object")
    out = {}
    for name, d in raw.items():
        if not isinstance(d, dict) or not isinstance(d.get("url"), str):
            raise UsageError(f"{path}: remote {name!r} has no url")
        settings = {k: d[k] for k in SETTINGS if d.get(k) is not None}
        if not isinstance(settings.get("allow_http", False), bool) \
                or not all(isinstance(v, str) for k, v in settings.items() if k != "allow_http"):
            raise UsageError(f"{path}: remote {name!r} has a setting of the wrong type", hint="fix or re-add it")
        out[name] = RemoteSpec(check_remote_name(name), d["url"], partial=check_partial(d.get("partial")),
                               **settings)
    return out


def _save(repo_dir: Path, remotes: dict[str, RemoteSpec]) -> None:
    # the settings added after the first format are written only when set: older files stay as they were
    later = set(SETTINGS) - {"endpoint_url", "region"}
    body = {n: {k: v for k, v in r.to_dict().items() if k != "name" and (v or k not in later)}
            for n, r in sorted(remotes.items())}
    (repo_dir / "tmp").mkdir(parents=True, exist_ok=True)
    write_atomic(_path(repo_dir), (json.dumps(body, indent=2) + "\n").encode(), repo_dir / "tmp")


def _lock(repo_dir: Path):
    return file_lock(repo_dir / "locks" / "remotes.json.lock")


def make_spec(name: str, url: str, *, partial: dict | None = None, **settings: Any) -> RemoteSpec:
    """A checked RemoteSpec: the name, the URL normalised, the partial setting and the transport settings
    (`check_settings`)."""
    url = normalize_url(url)
    return RemoteSpec(check_remote_name(name), url, partial=check_partial(partial), **check_settings(url, settings))


def add(repo_dir: Path, name: str, url: str, *, partial: dict | None = None, **settings: Any) -> RemoteSpec:
    """Record a new remote (a plain path is made absolute) with its transport settings (`SETTINGS`) and return
    it; AlreadyExists if the name is taken."""
    spec = make_spec(name, url, partial=partial, **settings)
    with _lock(repo_dir):
        remotes = load(repo_dir)
        if name in groups(repo_dir):
            raise AlreadyExists(f"{name!r} already names a remote group", hint="see `ckstore remote list`")
        if name in remotes:
            raise AlreadyExists(f"remote {name!r} already exists ({remotes[name].url})",
                                hint=f"remove it first with `ckstore remote remove {name}`")
        remotes[name] = spec
        _save(repo_dir, remotes)
    return spec


def set_partial(repo_dir: Path, name: str, partial: dict | None) -> None:
    """Replace a known remote's partial-clone setting; UsageError if there is no such remote."""
    with _lock(repo_dir):
        remotes = load(repo_dir)
        r = get_from(remotes, name)
        remotes[name] = replace(r, partial=check_partial(partial))
        _save(repo_dir, remotes)


def remove(repo_dir: Path, name: str) -> RemoteSpec:
    """Forget a remote and its index cache (remote-tracking refs are removed by the caller, audited)."""
    with _lock(repo_dir):
        remotes = load(repo_dir)
        spec = get_from(remotes, name)
        del remotes[name]
        _save(repo_dir, remotes)
    shutil.rmtree(cache_dir(repo_dir, name), ignore_errors=True)
    return spec


def get_from(remotes: dict[str, RemoteSpec], name: str) -> RemoteSpec:
    """The remote called `name` in `remotes`; raises UsageError naming the known ones if there is none."""
    if name not in remotes:
        known = ", ".join(sorted(remotes)) or "none"
        raise UsageError(f"no remote named {name!r} (known: {known})",
                         hint="add one with `ckstore remote add NAME URL`")
    return remotes[name]


def get(repo_dir: Path, name: str | None) -> RemoteSpec:
    """The remote called `name`; None means "origin", or the only remote there is."""
    remotes = load(repo_dir)
    if name is None:
        if "origin" in remotes or len(remotes) != 1:
            name = "origin"
        else:
            name = next(iter(remotes))
    return get_from(remotes, name)


def cache_dir(repo_dir: Path, name: str) -> Path:
    """The directory under the repository that caches a remote's index data."""
    return repo_dir / "cache" / "remotes" / check_remote_name(name)


def partial_remote(repo_dir: Path) -> RemoteSpec | None:
    """The remote a partial clone fetches missing chunks from (origin first), or None for a full repository."""
    partial = sorted((r for r in load(repo_dir).values() if r.partial is not None),
                     key=lambda r: r.name != "origin")
    return partial[0] if partial else None


# ------------------------------------------------------------------------------------------------ groups
GROUPS_FILE = "remote-groups.json"   # {"groups": {name: [member, ...]}, "min_replicas": N | null}


def _load_groups(repo_dir: Path) -> dict:
    path = repo_dir / GROUPS_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {"groups": {}, "min_replicas": None}
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} is not readable JSON: {exc}", hint="fix or delete the file") from None
    groups = raw.get("groups") if isinstance(raw, dict) else None
    if not isinstance(groups, dict) or not all(isinstance(m, list) and all(isinstance(x, str) for x in m)
                                               for m in groups.values()):
        raise UsageError(f"{path} must hold {{\"groups\": {{NAME: [MEMBER, ...]}}}}")
    n = raw.get("min_replicas")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise UsageError(f"{path}: min_replicas must be a whole number ≥ 1 or null")
    return {"groups": {k: list(v) for k, v in groups.items()}, "min_replicas": n}


def _save_groups(repo_dir: Path, data: dict) -> None:
    (repo_dir / "tmp").mkdir(parents=True, exist_ok=True)
    write_atomic(repo_dir / GROUPS_FILE, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode(),
                 repo_dir / "tmp")


def groups(repo_dir: Path) -> dict[str, list[str]]:
    """Every remote group by name, with its members in the order given."""
    return _load_groups(repo_dir)["groups"]


def min_replicas(repo_dir: Path) -> int | None:
    """The configured minimum number of remotes that should hold each commit (None: not set)."""
    return _load_groups(repo_dir)["min_replicas"]


def add_group(repo_dir: Path, name: str, members: list[str]) -> list[str]:
    """Record a group of known remotes (at least one, each once, no group in a group); the name must be free."""
    check_remote_name(name)
    if not members:
        raise UsageError(f"group {name!r} needs at least one member", hint="e.g. `ckstore remote add-group "
                                                                          "offsite origin backup`")
    with _lock(repo_dir):
        known = load(repo_dir)
        data = _load_groups(repo_dir)
        if name in known or name in data["groups"]:
            raise AlreadyExists(f"{name!r} already names a remote or group",
                                hint=f"remove it first with `ckstore remote remove {name}`")
        if len(set(members)) != len(members):
            raise UsageError(f"group {name!r} names a member twice")
        for m in members:
            if m in data["groups"]:
                raise UsageError(f"{m!r} is a group: a group's members are remotes")
            get_from(known, m)
        data["groups"][name] = list(members)
        _save_groups(repo_dir, data)
    return list(members)


def remove_group(repo_dir: Path, name: str) -> list[str]:
    """Forget a group (its member remotes stay); UsageError if there is none of that name."""
    with _lock(repo_dir):
        data = _load_groups(repo_dir)
        if name not in data["groups"]:
            raise UsageError(f"no remote group named {name!r} (known: {', '.join(sorted(data['groups'])) or 'none'})")
        members = data["groups"].pop(name)
        _save_groups(repo_dir, data)
    return members


def drop_member(repo_dir: Path, remote: str) -> list[str]:
    """Take a removed remote out of every group; returns the groups it was in (a group left empty goes too)."""
    with _lock(repo_dir):
        data = _load_groups(repo_dir)
        hit = [g for g, m in data["groups"].items() if remote in m]
        for g in hit:
            data["groups"][g] = [m for m in data["groups"][g] if m != remote]
            if not data["groups"][g]:
                del data["groups"][g]
        if hit:
            _save_groups(repo_dir, data)
    return hit


def set_min_replicas(repo_dir: Path, n: int | None) -> None:
    """Set (or, with None, clear) the minimum number of remotes that should hold each commit."""
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise UsageError(f"min replicas must be a whole number ≥ 1, not {n!r}")
    with _lock(repo_dir):
        data = _load_groups(repo_dir)
        data["min_replicas"] = n
        _save_groups(repo_dir, data)
