"""`ckstore serve token add/list/revoke` and `ckstore serve audit` through the console entry point; `serve PATH`
parsed as `serve run PATH`."""

from __future__ import annotations

import json

import pytest

from ckstore.errors import RemoteAccessDenied
from ckstore.serve.tokens import TokenStore, hash_secret, state_dir

from conftest import run_cli as _run

from .conftest import start


def test_tokens_and_audit(tmp_path, monkeypatch, capsys):
    code, out, err = _run(monkeypatch, capsys, "serve", "token", "add", "ci", "--scope", "push:refs/heads/team-*",
                          "--repo", "team", "--expires", "30d", "--state", tmp_path)
    assert code == 0, err
    secret = out.strip()
    assert secret.startswith("ckst_") and "shown only now" in err
    stored = (state_dir(tmp_path) / "tokens.json").read_text()
    assert secret not in stored and hash_secret(secret) in stored
    assert oct((state_dir(tmp_path) / "tokens.json").stat().st_mode & 0o777) == "0o600"
    code, out, err = _run(monkeypatch, capsys, "serve", "token", "list", "--state", tmp_path, "--json")
    [listed] = json.loads(out)
    assert listed["scopes"] == ["push:refs/heads/team-*"] and listed["repos"] == ["team"] and listed["expires"]
    assert "digest" not in listed
    code, out, err = _run(monkeypatch, capsys, "serve", "token", "add", "ci", "--scope", "read", "--state", tmp_path)
    assert code != 0 and "a token named 'ci' exists" in err
    code, out, err = _run(monkeypatch, capsys, "serve", "token", "add", "x", "--scope", "write", "--state", tmp_path)
    assert code != 0 and "unknown scope 'write'" in err
    code, out, err = _run(monkeypatch, capsys, "serve", "token", "revoke", "ci", "--state", tmp_path)
    assert code == 0 and TokenStore(state_dir(tmp_path)).tokens()["ci"].revoked


def test_audit_lists_writes(tmp_path, monkeypatch, capsys):
    s = start(tmp_path / "root")
    try:
        s.client("team").put("objects/ab/" + "c" * 62, b"x", if_absent=True)
        with pytest.raises(RemoteAccessDenied):
            s.client("team", s.token("read")).put("config", b"{}")
    finally:
        s.server.stop()
    code, out, err = _run(monkeypatch, capsys, "serve", "audit", tmp_path / "root", "--json")
    assert code == 0, err
    entries = [json.loads(line) for line in out.splitlines()]
    assert [(e["op"], e["result"]) for e in entries] == [("put", 200), ("put", 403)]
    code, out, err = _run(monkeypatch, capsys, "serve", "audit", tmp_path / "root")
    assert code == 0 and "read-only" in out


def test_serve_checks_its_arguments(tmp_path, monkeypatch, capsys):
    code, out, err = _run(monkeypatch, capsys, "serve", tmp_path / "missing")
    assert code != 0 and "is not a directory" in err
    code, out, err = _run(monkeypatch, capsys, "serve", tmp_path, "--listen", "nowhere")
    assert code != 0 and "cannot read --listen" in err
    code, out, err = _run(monkeypatch, capsys, "serve", tmp_path, "--tls-cert", tmp_path / "c.pem")
    assert code != 0 and "--tls-cert and --tls-key together" in err
