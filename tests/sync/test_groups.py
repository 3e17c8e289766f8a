"""Remote groups (replicas), min_replicas, fetch --prune, and the remote lifecycle commands on the CLI."""

from __future__ import annotations

import json
import sys

import pytest

import ckstore
from ckstore import cli
from ckstore.errors import AlreadyExists, UsageError
from ckstore.storage import remotes
from ckstore.transport import open_transport, retry

from remote_helpers import Series, commit_n, new_repo, same_tree


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(retry, "BACKOFF", 0.01)
    monkeypatch.setenv("CKSTORE_AUTHOR", "tester@example")


def run(capsys, *args) -> tuple[int, str, str]:
    """`ckstore ARGS` through the console entry point, in-process."""
    capsys.readouterr()
    saved, sys.argv = sys.argv, ["ckstore", *map(str, args)]
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved
    out, err = capsys.readouterr()
    return code, out, err


def test_push_to_a_group_reaches_every_member_and_reports_a_failure(tmp_path, capsys):
    repo = new_repo(tmp_path / "a")
    (tmp_path / "blocker").write_text("a file where a directory remote should be")
    repo.remote_add("origin", str(tmp_path / "r1"))
    repo.remote_add("backup", str(tmp_path / "r2"))
    repo.remote_add("broken", str(tmp_path / "blocker" / "r3"))
    v = commit_n(repo, Series(tmp_path / "src"), 2)
    repo.remote_add_group("offsite", ["origin", "backup"])
    result = repo.push("offsite")
    assert result.ok and [r.remote for r in result.results] == ["origin", "backup"]
    assert all(r.commits == 2 for r in result.results)
    assert repo.fsck(remote="offsite", read_data=True).ok
    assert remotes.groups(repo.dir) == {"offsite": ["origin", "backup"]}
    with pytest.raises(AlreadyExists):
        repo.remote_add_group("origin", ["backup"])
    with pytest.raises(UsageError, match="no remote named"):
        repo.remote_add_group("g2", ["origin", "nowhere"])
    repo.remote_add_group("all", ["broken", "origin", "backup"])
    commit_n(repo, Series(tmp_path / "src2", seed=5), 1)
    partial = repo.push("all")
    assert not partial.ok and list(partial.failures) == ["broken"]
    assert [r.remote for r in partial.results] == ["origin", "backup"]
    for name in ("r1", "r2"):
        with ckstore.clone(str(tmp_path / name), tmp_path / f"c-{name}") as c:
            c.checkout(v[1][0], tmp_path / f"out-{name}")
            assert same_tree(v[1][1], tmp_path / f"out-{name}")
    repo.close()
    # the CLI: list shows groups; a failing member fails the command (each member still pushed)
    code, out, err = run(capsys, "-C", tmp_path / "a", "remote", "list")
    assert code == 0 and "offsite\tgroup: origin backup" in out
    code, out, err = run(capsys, "-C", tmp_path / "a", "push", "all")
    assert code == 1 and "push to broken failed" in err and "origin:" in out and "backup:" in out
    code, out, err = run(capsys, "-C", tmp_path / "a", "remote", "set-min-replicas", "2")
    assert code == 0 and remotes.min_replicas(tmp_path / "a" / ".ckstore") == 2
    code, out, err = run(capsys, "-C", tmp_path / "a", "remote", "add-group", "bad", "origin", "origin")
    assert code != 0 and "error:" in err
    code, out, err = run(capsys, "-C", tmp_path / "a", "remote", "remove", "backup")
    assert code == 0 and remotes.groups(tmp_path / "a" / ".ckstore")["offsite"] == ["origin"]
    code, out, err = run(capsys, "-C", tmp_path / "a", "remote", "remove", "offsite")
    assert code == 0 and "offsite" not in remotes.groups(tmp_path / "a" / ".ckstore")
    code, out, err = run(capsys, "-C", tmp_path / "a", "remote", "list", "--json")
    assert json.loads(out)["min_replicas"] == 2


def test_fetch_prune_drops_tracking_refs_the_remote_no_longer_has(tmp_path, capsys):
    repo = new_repo(tmp_path / "a")
    repo.remote_add("origin", str(tmp_path / "r"))
    commit_n(repo, Series(tmp_path / "src"), 1)
    repo.branch("gone")
    repo.push(all=True)
    clone = ckstore.clone(str(tmp_path / "r"), tmp_path / "b")
    assert "refs/remotes/origin/gone" in clone.engine.refs.list()
    open_transport(str(tmp_path / "r")).delete("refs/heads/gone")
    assert "refs/remotes/origin/gone" in clone.engine.refs.list()
    plain = clone.fetch()
    assert not any(r["status"] == "pruned" for r in plain.refs)
    result = clone.fetch(prune=True)
    assert [r["ref"] for r in result.refs if r["status"] == "pruned"] == ["refs/remotes/origin/gone"]
    assert "refs/remotes/origin/gone" not in clone.engine.refs.list()
    assert any(e.action == "fetch-prune" for e in clone.audit())
    clone.close()
    code, out, err = run(capsys, "-C", tmp_path / "b", "fetch", "--prune")
    assert code == 0, err


def test_cli_archive_and_restore(tmp_path, capsys):
    repo = new_repo(tmp_path / "a")
    repo.remote_add("cold", str(tmp_path / "cold"))
    v = commit_n(repo, Series(tmp_path / "src"), 2)
    repo.close()
    code, out, err = run(capsys, "-C", tmp_path / "a", "archive", "--to", "cold", v[0][0])
    assert code == 0 and "archived 1 commits to cold" in out, err
    code, out, err = run(capsys, "-C", tmp_path / "a", "archive", "--to", "cold", "--older-than", "3 weeks")
    assert code == 2 or code == 1, (code, err)
    assert "error: cannot read duration" in err
    code, out, err = run(capsys, "-C", tmp_path / "a", "checkout", v[0][0], "-o", tmp_path / "out")
    assert code == 0 and same_tree(v[0][1], tmp_path / "out")
    code, out, err = run(capsys, "-C", tmp_path / "a", "restore-archive", v[0][0], "--json")
    assert code == 0 and json.loads(out)["commits"] == [v[0][0]]
    code, out, err = run(capsys, "-C", tmp_path / "a", "restore-archive", v[0][0])
    assert code != 0 and "is not archived" in err


def test_cli_forget_and_gc_on_a_remote(tmp_path, capsys):
    repo = new_repo(tmp_path / "a")
    repo.remote_add("origin", str(tmp_path / "r"))
    v = []
    for i in range(3):
        v += commit_n(repo, Series(tmp_path / f"src{i}", seed=i), 1)
        repo.push()
    repo.close()
    code, out, err = run(capsys, "-C", tmp_path / "a", "forget", "--remote", "origin", "--keep-last", "1")
    assert code == 0, err
    code, out, err = run(capsys, "-C", tmp_path / "a", "gc", "--remote", "origin", "--now", "--json")
    assert code == 0, err
    assert json.loads(out)["packs_swept"] == 2
    with ckstore.clone(str(tmp_path / "r"), tmp_path / "b") as c:
        assert [x.id for x in c.log()] == [v[2][0]]
        assert c.fsck(remote="origin", read_data=True).ok
