"""torch.distributed.checkpoint storage: `CkstoreWriter` / `CkstoreReader`.

    dcp.save(state, storage_writer=CkstoreWriter("runs", branch="main", step=step))
    dcp.load(state, storage_reader=CkstoreReader("runs", "main"))      # resharded to the loading world, as DCP does

Each rank commits its write items (tensors and DCP's byte items) as one state dict on a staging branch, so its
data lands as chunks, deduplicated and delta-coded against the previous checkpoint. The coordinator's `finish`
joins the ranks' manifests into one commit — `rank-R.safetensors` files, and a tree holding the DCP metadata (as
JSON, never pickled) and every item — moves the branch to it once it is stored and drops the staging branches.
A failed save moves no branch (a staging branch may be left behind: `ckstore branch -D dcp-staging/...`).
"""

from __future__ import annotations

import io
import json
import os
import uuid
from dataclasses import replace
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint import StorageReader, StorageWriter
from torch.distributed.checkpoint.metadata import (BytesStorageMetadata, ChunkStorageMetadata, Metadata,
                                                   MetadataIndex, StorageMeta, TensorProperties,
                                                   TensorStorageMetadata)
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlan, LoadPlanner, SavePlan, SavePlanner
from torch.distributed.checkpoint.planner import WriteItemType
from torch.distributed.checkpoint.storage import WriteResult
from torch.futures import Future

from ..api import Repo
from ..errors import CkstoreError
from ..model.objects import FileRecipe, Manifest, TensorRef
from .common import open_or_init

FORMAT = "ckstore-dcp/1"
STAGING = "dcp-staging/"
SCHEME = "ckstore://"


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _key(index: MetadataIndex, bytes_item: bool) -> str:
    return f"{index.fqn}@bytes" if bytes_item else f"{index.fqn}@{','.join(map(str, index.offset or ()))}"


def _done(value: Any) -> Future:
    fut: Future = Future()
    fut.set_result(value)
    return fut


class CkstoreWriter(StorageWriter):
    """A DCP StorageWriter committing one checkpoint to `branch` (default HEAD's) of the repository at
    `repo_or_path` (created by the coordinator when missing)."""

    def __init__(self, repo_or_path: str | os.PathLike, *, branch: str | None = None, step: int | None = None,
                 message: str = "dcp checkpoint", metrics: dict | None = None) -> None:
        super().__init__()
        self.path, self.branch, self.step, self.message, self.metrics = repo_or_path, branch, step, message, metrics
        self.is_coordinator = False
        self.commit_id: str | None = None  # set by the coordinator's finish

    def reset(self, checkpoint_id: str | os.PathLike | None = None) -> None:
        """A new save; a `checkpoint_id` of the form ckstore://BRANCH picks the branch."""
        if checkpoint_id is not None and os.fspath(checkpoint_id).startswith(SCHEME):
            self.branch = os.fspath(checkpoint_id)[len(SCHEME):] or None

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike) -> bool:
        """Only ckstore://BRANCH ids are ours."""
        return os.fspath(checkpoint_id).startswith(SCHEME)

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        """The coordinator makes sure the repository exists before any rank writes to it."""
        self.is_coordinator = is_coordinator
        if is_coordinator:
            open_or_init(self.path)[0].close()

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        """Unchanged."""
        return plan

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        """Unchanged."""
        return plans

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future:
        """Commit this rank's items as a state dict on a staging branch; results name the commit and the keys."""
        rank = _rank()
        state: dict[str, Any] = {}
        sizes: dict[str, int] = {}
        for item in plan.items:
            is_bytes = item.type == WriteItemType.BYTE_IO
            data = planner.resolve_data(item)
            key = _key(item.index, is_bytes)
            if is_bytes:
                raw = data.getvalue() if isinstance(data, io.BytesIO) else bytes(data)
                state[key] = (torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw
                              else torch.zeros(0, dtype=torch.uint8))
                sizes[key] = len(raw)
            else:
                tensor = data.detach().to("cpu").contiguous()
                state[key] = tensor
                sizes[key] = tensor.numel() * tensor.element_size()
        if not state:
            return _done([])
        branch = f"{STAGING}{uuid.uuid4().hex[:16]}/rank-{rank}"
        repo, owned = open_or_init(self.path)
        try:
            done = repo.commit(state, f"dcp staging, rank {rank}", branch=branch, capture_env=False)
        finally:
            if owned:
                repo.close()
        return _done([WriteResult(index=item.index, size_in_bytes=sizes[_key(item.index, item.type ==
                                                                               WriteItemType.BYTE_IO)],
                                  storage_data={"rank": rank, "commit": done.id, "branch": branch,
                                                "key": _key(item.index, item.type == WriteItemType.BYTE_IO)})
                      for item in plan.items])

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        """Join every rank's staging commit into one commit and move the branch to it."""
        items = [wr for per_rank in results for wr in per_rank]
        repo, owned = open_or_init(self.path)
        try:
            manifest = _joined(repo, metadata, items)
            done = repo.commit(manifest, self.message, step=self.step, metrics=self.metrics, branch=self.branch)
            self.commit_id = done.id
            for branch in sorted({wr.storage_data["branch"] for wr in items}):
                repo.delete_branch(branch, force=True)  # its data is the new commit's now
        finally:
            if owned:
                repo.close()

    def storage_meta(self) -> StorageMeta | None:
        """No checkpoint id of its own: the commit id is known only after finish."""
        return StorageMeta()


def _joined(repo: Repo, metadata: Metadata, items: list[WriteResult]) -> Manifest:
    commits = {}
    for wr in items:
        commits.setdefault(wr.storage_data["commit"], wr.storage_data["rank"])
    files, tensors, names = [], [], set()
    for commit, rank in sorted(commits.items(), key=lambda kv: kv[1]):
        m = repo.manifest(commit)
        base, path = len(tensors), f"rank-{rank}.safetensors"
        for t in m.tensors:
            if t.name in names:
                raise CkstoreError(f"DCP item {t.name!r} was written by two ranks")
            names.add(t.name)
            tensors.append(replace(t, file=path))
        for f in m.files:
            segs = tuple(TensorRef(s.index + base) if isinstance(s, TensorRef) else s for s in f.segments)
            files.append(FileRecipe(path, f.size, f.hash, segs))
    meta = encode_metadata(metadata, items)
    tree = {"m": [["format", {"v": FORMAT}], ["dcp_metadata", {"v": meta}],
                  ["items", {"m": [[t.name, {"x": t.name, "k": "torch"}] for t in tensors]}]]}
    return Manifest(tuple(sorted(files, key=lambda f: f.path)), tuple(tensors), tree)


# -- metadata as JSON --------------------------------------------------------------------------------------------

def encode_metadata(metadata: Metadata, items: list[WriteResult]) -> str:
    """DCP's Metadata as JSON (dtypes by name, sizes as lists); storage_data maps each item to its key."""
    sd = {}
    for fqn, md in metadata.state_dict_metadata.items():
        if isinstance(md, BytesStorageMetadata):
            sd[fqn] = {"bytes": True}
        else:
            sd[fqn] = {"dtype": str(md.properties.dtype).removeprefix("torch."), "size": list(md.size),
                       "requires_grad": bool(md.properties.requires_grad),
                       "chunks": [[list(c.offsets), list(c.sizes)] for c in md.chunks]}
    planner = metadata.planner_data
    if planner is not None and not (isinstance(planner, dict) and all(
            isinstance(k, str) and isinstance(v, (tuple, list)) and all(isinstance(p, (str, int)) for p in v)
            for k, v in planner.items())):
        raise CkstoreError(f"DCP planner_data of type {type(planner).__name__} cannot be stored without pickle")
    storage = [[wr.index.fqn, None if wr.index.offset is None else list(wr.index.offset), wr.storage_data["key"]]
               for wr in items]
    return json.dumps({"state_dict_metadata": sd, "storage_data": storage, "version": metadata.version,
                       "planner_data": None if planner is None else {k: list(v) for k, v in planner.items()}})


def decode_metadata(text: Any, commit: str) -> Metadata:
    """Metadata back from `encode_metadata`'s JSON, every field checked (the commit may come from a remote)."""
    def bad(what: str) -> CkstoreError:
        return CkstoreError(f"commit {commit[:12]} is not a readable DCP checkpoint: {what}")

    try:
        d = json.loads(text)
        sd: dict[str, Any] = {}
        for fqn, md in d["state_dict_metadata"].items():
            if md.get("bytes"):
                sd[fqn] = BytesStorageMetadata()
                continue
            dtype = getattr(torch, md["dtype"], None)
            if not isinstance(dtype, torch.dtype):
                raise bad(f"unknown dtype {md['dtype']!r}")
            chunks = [ChunkStorageMetadata(torch.Size(_ints(o)), torch.Size(_ints(s))) for o, s in md["chunks"]]
            sd[fqn] = TensorStorageMetadata(TensorProperties(dtype=dtype, requires_grad=bool(md["requires_grad"])),
                                            torch.Size(_ints(md["size"])), chunks)
        storage = {MetadataIndex(str(fqn), None if off is None else _ints(off)): (commit, str(key))
                   for fqn, off, key in d["storage_data"]}
        planner = d.get("planner_data")
        planner = None if planner is None else {str(k): tuple(v) for k, v in planner.items()}
    except CkstoreError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise bad(f"{type(exc).__name__}: {exc}") from None
    return Metadata(sd, planner_data=planner, storage_data=storage, storage_meta=StorageMeta(checkpoint_id=commit),
                    version=d.get("version") if isinstance(d.get("version"), str) else None)


def _ints(values: Any) -> list[int]:
    if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                               for v in values):
        raise ValueError(f"expected a list of non-negative integers, got {str(values)[:80]}")
    return values


class CkstoreReader(StorageReader):
    """A DCP StorageReader over commit `rev` of the repository at `repo_or_path`."""

    def __init__(self, repo_or_path: str | os.PathLike, rev: str = "HEAD") -> None:
        super().__init__()
        self.path, self.rev = repo_or_path, rev
        self.storage_data: dict = {}

    def reset(self, checkpoint_id: str | os.PathLike | None = None) -> None:
        """A new load; a `checkpoint_id` ckstore://REV (or a plain revision) picks the commit."""
        if checkpoint_id is not None:
            self.rev = os.fspath(checkpoint_id).removeprefix(SCHEME) or "HEAD"

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike) -> bool:
        """Only ckstore://REV ids are ours."""
        return os.fspath(checkpoint_id).startswith(SCHEME)

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        """The checkpoint's DCP metadata, pinned to the commit `rev` names now."""
        with Repo.open(self.path) as repo:
            commit = repo.resolve(self.rev)
            tree = repo.manifest(commit).tree
        fields = dict(tree.get("m", [])) if isinstance(tree, dict) and isinstance(tree.get("m"), list) else {}
        if fields.get("format", {}).get("v") != FORMAT or not isinstance(fields.get("dcp_metadata", {}).get("v"), str):
            raise CkstoreError(f"{self.rev} ({commit[:12]}) is not a DCP checkpoint",
                               hint="commit it with dcp.save(..., storage_writer=CkstoreWriter(...))")
        return decode_metadata(fields["dcp_metadata"]["v"], commit)

    def set_up_storage_reader(self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        """Remember where each item is stored."""
        self.storage_data = metadata.storage_data

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        """Unchanged."""
        return plan

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        """Unchanged."""
        return plans

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future:
        """Load the stored items this rank's plan needs (verified chunks) and hand them to the planner."""
        by_commit: dict[str, set[str]] = {}
        for req in plan.items:
            commit, key = self.storage_data[req.storage_index]
            by_commit.setdefault(commit, set()).add(key)
        loaded: dict[tuple[str, str], Any] = {}
        with Repo.open(self.path) as repo:
            for commit, keys in by_commit.items():
                for key, value in repo.load(commit, names=sorted(keys), framework="torch").items():
                    loaded[(commit, key)] = value
        for req in plan.items:
            commit, key = self.storage_data[req.storage_index]
            value = loaded[(commit, key)]
            if req.type == LoadItemType.BYTE_IO:
                planner.load_bytes(req, _sanitized(value.numpy().tobytes(), key))
                continue
            for dim, (start, length) in enumerate(zip(req.storage_offsets, req.lengths)):
                value = value.narrow(dim, start, length)
            target = planner.resolve_tensor(req).detach()
            if target.size() != value.size():
                raise CkstoreError(f"DCP item {key!r}: stored {tuple(value.size())}, asked {tuple(target.size())}")
            target.copy_(value)
            planner.commit_tensor(req, target)
        return _done(None)


def _sanitized(raw: bytes, key: str) -> io.BytesIO:
    """A byte item for DCP's load planner, whose own loader is not restricted: the stored bytes are first read with
    torch's weights-only unpickler (no code runs; anything outside its allowlist is refused), and the planner gets
    a fresh torch.save of that plain value, so it never sees a byte that came from the store unchecked."""
    try:
        value = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CkstoreError(f"DCP item {key!r} holds an object torch's weights-only loader refuses: "
                           f"{str(exc).splitlines()[0][:200]}") from None
    out = io.BytesIO()
    torch.save(value, out)
    out.seek(0)
    return out
