"""SSH signatures on commits, alias moves and audit entries (real ssh-keygen): verified, forged ones rejected."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from ckstore import Repo
from conftest import make_safetensors

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen (openssh-client)")


def keypair(path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path), "-C", path.name], check=True)
    return path


@pytest.fixture
def signed(tmp_path):
    alice, mallory = keypair(tmp_path / "alice"), keypair(tmp_path / "mallory")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text("alice@example.com " + " ".join((tmp_path / "alice.pub").read_text().split()[:2]) + "\n")
    repo = Repo.init(tmp_path / "repo")
    repo.configure_signing(key=str(alice), signer="alice@example.com", allowed_signers=str(allowed))
    rng = np.random.default_rng(0)
    for i in range(2):
        f = make_safetensors(tmp_path / f"m{i}.safetensors", {"w": rng.standard_normal(1000).astype(np.float32)})
        repo.commit(f, f"c{i}")
    repo.alias_set("champion", "HEAD", "signed")
    repo.tag("v1", "HEAD~1", message="release")
    yield repo, mallory
    repo.close()


def test_everything_is_signed_and_verifies(signed):
    repo, _ = signed
    assert repo.verify_signatures() == []
    assert all(e.sig and e.signer == "alice@example.com" for e in repo.audit())
    noted = repo.noted(ns="signatures")
    kinds = sorted(v["signatures"]["kind"] for v in noted.values())
    assert kinds == ["alias", "commit", "commit", "tag"]
    assert repo.engine.refs.read("refs/aliases/champion").hex() in noted  # the move itself is signed
    assert repo.engine.refs.read("refs/tags/v1").hex() in noted  # the annotated tag object
    repo.configure_signing(require=True)
    assert repo.verify_signatures() == [] and repo.fsck().ok


def test_a_forged_audit_signature_is_rejected(signed):
    repo, mallory = signed
    log = repo.dir / "logs" / "audit"
    lines = log.read_text().splitlines()
    entry = json.loads(lines[-1])
    text = f"ckstore audit {entry['seq']} {entry['hash']}"
    entry["sig"] = subprocess.run(["ssh-keygen", "-Y", "sign", "-f", str(mallory), "-n", "ckstore"],
                                  input=text.encode(), capture_output=True, check=True).stdout.decode()
    lines[-1] = json.dumps(entry, sort_keys=True, separators=(",", ":"))
    log.write_text("\n".join(lines) + "\n")
    problems = repo.verify_signatures()
    assert len(problems) == 1 and f"audit entry {entry['seq']}" in problems[0] and "rejected" in problems[0]
    assert not repo.fsck().ok


def test_a_signature_moved_to_another_object_is_rejected(signed):
    repo, _ = signed
    # an edited entry keeps its old signature: the chain breaks and the signature no longer matches its hash
    log = repo.dir / "logs" / "audit"
    lines = log.read_text().splitlines()
    entry = json.loads(lines[0])
    entry["message"] = "rewritten"
    lines[0] = json.dumps(entry, sort_keys=True, separators=(",", ":"))
    log.write_text("\n".join(lines) + "\n")
    problems = repo.verify_signatures()
    assert any("entry was altered" in p for p in problems)


def test_unsigned_work_is_named_when_signatures_are_required(signed, tmp_path):
    repo, _ = signed
    repo.configure_signing(require=True)
    cfg = repo.engine.config
    from dataclasses import replace
    repo._save_config(replace(cfg, governance={k: v for k, v in cfg.governance.items() if k != "signing_key"}))
    repo.engine.refs.audit.signer = None
    f = make_safetensors(tmp_path / "m9.safetensors", {"w": np.ones(10, np.float32)})
    repo.commit(f, "unsigned")
    problems = repo.verify_signatures()
    assert any("is not signed" in p and "commit" in p for p in problems)
    assert any(p.startswith("audit entry") and "is not signed" in p for p in problems)
