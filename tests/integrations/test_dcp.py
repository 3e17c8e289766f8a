"""torch.distributed.checkpoint through ckstore: 2 ranks save one commit, 4 ranks (and 1) load it resharded."""

from __future__ import annotations

import multiprocessing
import traceback
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch.distributed.checkpoint")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch without gloo", allow_module_level=True)

import ckstore  # noqa: E402


def _rank(rank: int, world: int, mode: str, repo: str, init: str, errors) -> None:
    try:
        from dcp_worker import run
        run(rank, world, mode, repo, init)
    except BaseException:
        errors.put(f"rank {rank}: {traceback.format_exc()}")
        raise


def launch(world: int, mode: str, repo: Path, tmp: Path) -> None:
    """`world` forked ranks (torch is imported once, here) on the gloo backend; fails with a rank's traceback."""
    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    init = f"file://{tmp / f'init-{mode}-{world}'}"
    procs = [ctx.Process(target=_rank, args=(r, world, mode, str(repo), init, errors)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if failed:
        first = errors.get(timeout=5) if not errors.empty() else "no traceback"
        for p in procs:
            p.kill()
        pytest.fail(f"{mode} with {world} ranks failed (exit codes {failed}):\n{first}")


def test_two_ranks_save_one_commit_and_four_ranks_load_it_resharded(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    launch(2, "save", repo, tmp_path)
    with ckstore.Repo.open(repo) as r:
        log = r.log()
        assert [c.message for c in log] == ["dcp step 7"] and log[0].step == 7
        assert [b.name for b in r.branches()] == ["main"]  # the staging branches are gone
        assert sorted(f.path for f in r.ls()) == ["rank-0.safetensors", "rank-1.safetensors"]
        assert r.fsck(read_data=True).ok
    launch(4, "load", repo, tmp_path)

    from dcp_worker import full_state
    import torch.distributed.checkpoint as dcp
    from ckstore.integrations.dcp import CkstoreReader
    state = {"w": torch.zeros(8, 6), "b": torch.zeros(12, dtype=torch.bfloat16), "step": 0}
    dcp.load(state, storage_reader=CkstoreReader(repo, "main"))  # no process group: one process, whole tensors
    assert torch.equal(state["w"], full_state()["w"]) and state["step"] == 7


def test_reader_refuses_a_commit_that_is_not_a_dcp_checkpoint(tmp_path: Path) -> None:
    import torch.distributed.checkpoint as dcp
    from ckstore.integrations.dcp import CkstoreReader
    with ckstore.Repo.init(tmp_path / "r") as r:
        r.commit({"w": torch.ones(2)}, "plain", capture_env=False)
    with pytest.raises(ckstore.errors.CkstoreError, match="is not a DCP checkpoint"):
        CkstoreReader(tmp_path / "r").read_metadata()
    with pytest.raises(BaseException):  # through dcp.load: DCP wraps the same error in a CheckpointException
        dcp.load({"w": torch.zeros(2)}, storage_reader=CkstoreReader(tmp_path / "r"))


def test_a_sharded_dcp_directory_commits_as_named_shards_and_loads_after_checkout(tmp_path: Path) -> None:
    import torch.distributed.checkpoint as dcp
    from dcp_worker import full_state
    launch(2, "dir", tmp_path / "ckpt", tmp_path)               # DCP's FileSystemWriter: __0_0 and __1_0.distcp
    with ckstore.Repo.init(tmp_path / "repo") as r:
        c = r.commit(tmp_path / "ckpt", "sharded", capture_env=False)
        shards = {(t.file, t.name, t.shape) for t in r.manifest(c.id).tensors}
        assert {("__0_0.distcp", "w", (4, 6)), ("__1_0.distcp", "w@4,0", (4, 6))} <= shards
        assert {t[1] for t in shards} == {"w", "w@4,0", "b"}
        r.checkout(c.id, tmp_path / "out")
    state = {"w": torch.zeros(8, 6), "b": torch.zeros(12, dtype=torch.bfloat16), "step": 0}
    dcp.load(state, storage_reader=dcp.FileSystemReader(str(tmp_path / "out")), no_dist=True)
    assert torch.equal(state["w"], full_state()["w"]) and torch.equal(state["b"], full_state()["b"])
    assert state["step"] == 7
