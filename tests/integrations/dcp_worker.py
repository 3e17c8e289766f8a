"""One rank of a torch.distributed.checkpoint save or load through ckstore (spawned by test_dcp.py)."""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.tensor import Shard, distribute_tensor, init_device_mesh

from ckstore.integrations.dcp import CkstoreReader, CkstoreWriter


def full_state(seed: int = 0) -> dict:
    """The state every rank saves: a sharded matrix, a replicated bf16 vector, and plain values."""
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(8, 6, generator=g), "b": torch.arange(12, dtype=torch.bfloat16),
            "step": 7, "extra": {"lr": 0.5, "names": ["a", "b"]}}


def run(rank: int, world: int, mode: str, repo: str, init: str) -> None:
    """Save (mode "save") or load and check (mode "load") the test state as one rank of `world`; or save it to a
    plain DCP directory (mode "dir", `repo` naming the directory)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    mesh = init_device_mesh("cpu", (world,))
    full = full_state()
    if mode == "dir":  # DCP's own FileSystemWriter, into the directory `repo`: one data file per rank
        state = {"w": distribute_tensor(full["w"], mesh, [Shard(0)]), "b": full["b"], "step": full["step"]}
        dcp.save(state, storage_writer=dcp.FileSystemWriter(repo))
    elif mode == "save":
        state = {"w": distribute_tensor(full["w"], mesh, [Shard(0)]), "b": full["b"], "step": full["step"],
                 "extra": full["extra"]}
        writer = CkstoreWriter(repo, branch="main", step=7, message="dcp step 7")
        dcp.save(state, storage_writer=writer)
        if rank == 0:
            print("COMMIT", writer.commit_id, flush=True)
    else:  # load, resharded to this world size
        state = {"w": distribute_tensor(torch.zeros(8, 6), mesh, [Shard(0)]),
                 "b": torch.zeros(12, dtype=torch.bfloat16), "step": 0, "extra": {"lr": 0.0, "names": []}}
        dcp.load(state, storage_reader=CkstoreReader(repo, "main"))
        assert torch.equal(state["w"].full_tensor(), full["w"]), "w differs"
        assert torch.equal(state["b"], full["b"]) and state["b"].dtype == torch.bfloat16, "b differs"
        assert state["step"] == 7 and state["extra"] == full["extra"], (state["step"], state["extra"])
        print("LOADED", rank, flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    rank, world, mode, repo, init = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    run(rank, world, mode, repo, init)
