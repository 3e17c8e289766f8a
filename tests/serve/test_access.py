"""Push, clone and fetch through a served remote, and who may do what: scopes, revoked and expired tokens, and the
remote's protected refs enforced by the server whatever the client does."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import ckstore
import ckstore.cli as ckstore_cli
from ckstore.errors import RemoteAccessDenied, RemotePreconditionFailed
from ckstore.serve.audit import read_audit
from ckstore.serve.tokens import state_dir

from .conftest import new_repo, snapshot


def _files(d):
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _push(repo, served, name, secret, monkeypatch, branches=None):
    monkeypatch.setenv("CKSTORE_TOKEN", secret)
    if "origin" not in [r.name for r in repo.remote_list()]:
        repo.remote_add("origin", served.url(name))
    return repo.push("origin", branches)


def test_push_clone_fetch_round_trip(served, tmp_path, monkeypatch):
    repo = new_repo(tmp_path / "a")
    result = _push(repo, served, "team", served.admin, monkeypatch)
    assert [r["status"] for r in result.refs] == ["created"]
    clone = ckstore.clone(served.url("team"), tmp_path / "b")
    repo.checkout("main", tmp_path / "out-a")
    clone.checkout("main", tmp_path / "out-b")
    assert _files(tmp_path / "out-a") == _files(tmp_path / "out-b") != {}
    assert [c.id for c in clone.log()] == [c.id for c in repo.log()]
    # a third commit arrives by fetch, byte for byte
    repo.commit({"w": np.ones((64, 64), np.float32), "b": np.zeros(64, np.float32)}, "third", capture_env=False)
    repo.push("origin")
    clone.fetch("origin")
    clone.checkout("origin/main", tmp_path / "out-c")
    repo.checkout("main", tmp_path / "out-d")
    assert _files(tmp_path / "out-c") == _files(tmp_path / "out-d")
    assert (served.root / "team" / "refs" / "heads" / "main").read_text().strip() == repo.log()[0].id
    entries = [e for e in read_audit(state_dir(served.root)) if e["repo"] == "team"]
    assert entries and all(e["result"] == 200 for e in entries)
    assert {"time", "token", "addr", "op", "key", "size"} <= set(entries[0])
    repo.close()
    clone.close()


def test_read_token_cannot_push(served, tmp_path, monkeypatch, capsys):
    repo = new_repo(tmp_path / "a")
    _push(repo, served, "ro", served.admin, monkeypatch)
    repo.commit({"w": np.zeros((64, 64), np.float32)}, "more", capture_env=False)
    before = snapshot(served.root / "ro")
    monkeypatch.setenv("CKSTORE_TOKEN", served.token("read"))
    monkeypatch.setattr(sys, "argv", ["ckstore", "-C", str(tmp_path / "a"), "push", "origin"])
    repo.close()
    with pytest.raises(SystemExit) as info:
        ckstore_cli.main()
    err = capsys.readouterr().err
    assert info.value.code != 0
    assert "is read-only" in err and "needs a push or admin scope" in err, err
    assert snapshot(served.root / "ro") == before
    # reads still work with it
    clone = ckstore.clone(served.url("ro"), tmp_path / "c")
    assert len(clone.log()) == 2
    clone.close()


def test_push_scope_moves_only_matching_refs(served, tmp_path, monkeypatch):
    repo = new_repo(tmp_path / "a")
    _push(repo, served, "scoped", served.admin, monkeypatch)
    repo.branch("team-a")
    repo.commit({"w": np.full((64, 64), 3, np.float32)}, "on main", capture_env=False)
    secret = served.token("push:refs/heads/team-*")
    monkeypatch.setenv("CKSTORE_TOKEN", secret)
    result = repo.push("origin", ["team-a"])
    assert [r["status"] for r in result.refs] == ["created"]
    main_before = (served.root / "scoped" / "refs" / "heads" / "main").read_bytes()
    with pytest.raises(RemoteAccessDenied) as info:
        repo.push("origin", ["main"])
    assert "may not move refs/heads/main" in str(info.value) and "refs/heads/team-*" in str(info.value)
    assert (served.root / "scoped" / "refs" / "heads" / "main").read_bytes() == main_before
    # the push scope creates new keys but never rewrites or deletes one
    t = served.client("scoped", secret)
    with pytest.raises(RemoteAccessDenied, match="needs the admin scope"):
        t.put("config", b"{}")
    key = next(k for k in t.list("objects"))
    with pytest.raises(RemoteAccessDenied, match="needs the admin scope"):
        t.delete(key)
    with pytest.raises(RemoteAccessDenied, match="needs the admin scope"):
        t.put("objects/zz/not-a-hash", b"x", if_absent=True)
    assert t.exists(key)
    repo.close()


def test_repo_restriction(served):
    secret = served.token("admin", repos=["only-this"])
    served.client("only-this", secret).put("x", b"1")
    with pytest.raises(RemoteAccessDenied, match="not valid for the remote 'other'"):
        served.client("other", secret).get("x")


def test_revoked_and_expired_tokens_refused(served):
    secret = served.token("read", expires_in=3600)
    t = served.client("tok", secret)
    served.client("tok").put("k", b"v")
    assert t.get("k") == b"v"
    served.clock.offset = 3601
    try:
        with pytest.raises(RemoteAccessDenied, match="expired at"):
            t.get("k")
    finally:
        served.clock.offset = 0
    assert t.get("k") == b"v"
    name = next(n for n, tok in served.tokens.tokens().items() if tok.expires)
    served.tokens.revoke(name)
    with pytest.raises(RemoteAccessDenied, match="was revoked"):
        t.get("k")
    with pytest.raises(RemoteAccessDenied, match="not valid on this server"):
        served.client("tok", "ckst_wrong").get("k")
    with pytest.raises(RemoteAccessDenied, match="bearer token is required"):
        served.client("tok", "").get("k")


def _set_protect(served, name, rules):
    t = served.client(name)
    raw, etag = t.get_with_etag("config")
    cfg = json.loads(raw)
    cfg["protect"] = rules
    t.put("config", json.dumps(cfg).encode(), if_match=etag)


def test_protected_refs_enforced_by_the_server(served, tmp_path, monkeypatch):
    repo = new_repo(tmp_path / "a")
    _push(repo, served, "prot", served.admin, monkeypatch)
    first, second = [c.id for c in reversed(repo.log())]
    _set_protect(served, "prot", {"refs/heads/main": {"ff_only": True, "no_delete": True},
                                  "refs/heads/gated": {"require_checks": True}})
    t = served.client("prot", served.token("push:refs/heads/*"))
    data, etag = t.get_with_etag("refs/heads/main")
    assert data.decode().strip() == second
    # a client ignoring the config writes the raw key: rewinding main is refused by the server
    with pytest.raises(RemoteAccessDenied, match="not a fast-forward"):
        t.put("refs/heads/main", f"{first}\n".encode(), if_match=etag)
    with pytest.raises(RemoteAccessDenied, match="not a fast-forward"):
        served.client("prot").put("refs/heads/main", f"{first}\n".encode())   # not even admin
    with pytest.raises(RemoteAccessDenied, match="may not be deleted"):
        served.client("prot").delete("refs/heads/main")
    assert t.get("refs/heads/main").decode().strip() == second
    # require_checks: push tokens may not move it; admin may
    with pytest.raises(RemoteAccessDenied, match="only an admin token"):
        t.put("refs/heads/gated", f"{second}\n".encode(), if_absent=True)
    served.client("prot").put("refs/heads/gated", f"{second}\n".encode(), if_absent=True)
    # a fast-forward is fine; a stale etag is still a precondition failure
    repo.commit({"w": np.zeros((64, 64), np.float32)}, "third", capture_env=False)
    monkeypatch.setenv("CKSTORE_TOKEN", served.token("push:refs/heads/*"))
    assert [r["status"] for r in repo.push("origin").refs] == ["updated"]
    with pytest.raises(RemotePreconditionFailed):
        t.put("refs/heads/main", f"{second}\n".encode(), if_match=etag)
    denied = [e for e in read_audit(state_dir(served.root)) if e["repo"] == "prot" and e["result"] == 403]
    assert any("not a fast-forward" in e["detail"] for e in denied)
    repo.close()
