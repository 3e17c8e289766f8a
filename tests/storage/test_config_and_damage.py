"""The config refuses settings readers cannot honour; damaged refs, HEAD and audit logs are DamagedRef errors, never
tracebacks or lost races; a removed tmp/ is recreated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ckstore import Repo
from ckstore.errors import DamagedRef, UnsupportedFormat


def test_delta_depth_above_what_readers_follow_is_refused(tmp_path: Path) -> None:
    Repo.init(tmp_path).close()
    config = tmp_path / ".ckstore" / "config"
    raw = json.loads(config.read_text())
    raw["codec"]["max_delta_depth"] = 64
    config.write_text(json.dumps(raw))
    Repo.open(tmp_path).close()
    raw["codec"]["max_delta_depth"] = 100
    config.write_text(json.dumps(raw))
    with pytest.raises(UnsupportedFormat, match="max_delta_depth an integer from 0 to 64"):
        Repo.open(tmp_path)


@pytest.mark.parametrize("content", [b"\xff\xfe" + b"a" * 62 + b"\n", b"\x00" * 65, b"ab" * 40 + b"\n"])
def test_damaged_ref_is_a_damaged_ref(tmp_path: Path, content: bytes) -> None:
    with Repo.init(tmp_path) as repo:
        repo.commit({"w": np.ones(2, np.float32)}, "a", capture_env=False)
    (tmp_path / ".ckstore" / "refs" / "heads" / "main").write_bytes(content)
    with Repo.open(tmp_path) as repo:
        with pytest.raises(DamagedRef, match="refs/heads/main"):
            repo.log()
        with pytest.raises(DamagedRef):
            repo.commit({"w": np.zeros(2, np.float32)}, "b", capture_env=False)


@pytest.mark.parametrize("content", [b"ref: refs/heads/\xff\n", b"garbage", b""])
def test_damaged_head_is_a_damaged_ref(tmp_path: Path, content: bytes) -> None:
    Repo.init(tmp_path).close()
    (tmp_path / ".ckstore" / "HEAD").write_bytes(content)
    with Repo.open(tmp_path) as repo:
        with pytest.raises(DamagedRef, match="HEAD"):
            repo.head_branch()
        repo.switch("main")  # the way to repair it
        assert repo.head_branch() == "main"


def test_cut_off_audit_log_blocks_ref_moves_with_a_clear_error(tmp_path: Path) -> None:
    with Repo.init(tmp_path) as repo:
        repo.commit({"w": np.ones(2, np.float32)}, "a", capture_env=False)
    log = tmp_path / ".ckstore" / "logs" / "audit"
    log.write_bytes(log.read_bytes()[:-20])
    with Repo.open(tmp_path) as repo:
        with pytest.raises(DamagedRef, match="audit log"):
            repo.branch("b")
        assert [b.name for b in repo.branches()] == ["main"]
        assert not repo.fsck().ok


def test_removed_tmp_directory_is_recreated(tmp_path: Path) -> None:
    Repo.init(tmp_path).close()
    (tmp_path / ".ckstore" / "tmp").rmdir()
    with Repo.open(tmp_path) as repo:
        info = repo.commit({"w": np.arange(4, dtype=np.float32)}, "after tmp/ was removed", capture_env=False)
        np.testing.assert_array_equal(repo.load(info.id)["w"], np.arange(4, dtype=np.float32))
        assert repo.fsck(read_data=True).ok


def test_non_utf8_bytes_in_the_audit_log_are_named_not_a_traceback(tmp_path: Path) -> None:
    with Repo.init(tmp_path) as repo:
        repo.commit({"w": np.ones(2, np.float32)}, "a", capture_env=False)
        repo.branch("b")
    log = tmp_path / ".ckstore" / "logs" / "audit"
    lines = log.read_bytes().split(b"\n")
    lines[0] = lines[0][:20] + b"\xff\xfe" + lines[0][22:]
    log.write_bytes(b"\n".join(lines))
    with Repo.open(tmp_path) as repo:
        assert [e.action for e in repo.audit()] == ["branch"]  # the readable entries
        problems = [p for p in repo.fsck().problems if p.kind == "audit"]
        assert any("line 1" in p.message for p in problems), problems
