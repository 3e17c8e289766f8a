"""The commit path does no back-and-forth: nothing it just wrote is read back, a full id resolves without ref files
or directory listings, and "new stored" is the bytes of frames the commit actually wrote."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from ckstore import Repo
from conftest import make_safetensors

# Runs a command in a fresh interpreter with an audit hook recording every file opened and directory listed.
TRACE = """
import json, sys
events = []
def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes)):
        events.append(("open", str(args[0])))
    elif event in ("os.listdir", "os.scandir"):
        events.append(("list", str(args[0])))
sys.addaudithook(hook)
sys.argv = ["ckstore"] + json.loads(sys.argv[1])
from ckstore.cli import main
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
sys.stdout.flush()
print("\\nEVENTS " + json.dumps(events))
"""


def traced(args: list[str], cwd: Path) -> tuple[str, list[tuple[str, str]]]:
    """(standard output, [(kind, path)]) of `ckstore ARGS` run in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", TRACE, json.dumps(args)], cwd=cwd, capture_output=True, text=True,
                         check=True, env={"CKSTORE_AUTHOR": "t <t@example.com>", "PATH": "/usr/bin:/bin"}).stdout
    text, _, events = out.rpartition("\nEVENTS ")
    return text, [tuple(e) for e in json.loads(events)]


def tensors(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"layer{i}.weight": rng.standard_normal((64, 64)).astype(np.float32) for i in range(4)}


def test_commit_opens_none_of_the_objects_it_wrote(tmp_path: Path) -> None:
    Repo.init(tmp_path).close()
    make_safetensors(tmp_path / "v0.safetensors", tensors(0))
    make_safetensors(tmp_path / "v1.safetensors", tensors(1))
    traced(["commit", "v0.safetensors", "-m", "v0"], tmp_path)
    out, events = traced(["commit", "v1.safetensors", "-m", "v1", "--json"], tmp_path)
    done = json.loads(out)
    objects = tmp_path / ".ckstore" / "objects"
    new = {str(objects / h[:2] / h[2:]) for h in (done["id"], done["manifest"])}
    assert [e for e in events if e[0] == "open" and e[1] in new] == []  # written, never read back
    assert not [e for e in events if e[0] == "list" and e[1].startswith(str(objects))]
    assert done["new_bytes"] > 0 and done["files"] == 1 and done["tensors"] == 4


def test_full_id_resolves_without_ref_files_or_listings(tmp_path: Path) -> None:
    with Repo.init(tmp_path) as repo:
        full = repo.commit({"w": np.ones(4, np.float32)}, "a", capture_env=False).id
    _, events = traced(["ls", full, "--json"], tmp_path)
    refs = str(tmp_path / ".ckstore" / "refs")
    assert not [e for e in events if e[1].startswith(refs)], "a full id must not be looked up as a ref"
    assert not [e for e in events if e[0] == "list" and "objects" in e[1]], "nor by listing objects/"


def test_new_stored_is_the_frames_this_commit_wrote(tmp_path: Path) -> None:
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    make_safetensors(a, tensors(0))
    make_safetensors(b, tensors(1))
    with Repo.init(tmp_path / "repo") as repo:
        first = repo.commit(a, "a", capture_env=False)
        index = repo.engine.store.index
        assert first.new_bytes == sum(loc.length for loc in index.get_many(list(repo.manifest().chunk_ids())).values())
        second = repo.commit(b, "b", capture_env=False)
        assert second.new_bytes > 0
        packs = repo.engine.store.pack_ids()
        repo.branch("other", first.id)
        # b's chunks are absent from this commit's parent (a) but already stored: nothing new is written
        on_other = repo.commit(b, "b again", branch="other", capture_env=False)
        assert on_other.new_bytes == 0 and repo.engine.store.pack_ids() == packs
        assert repo.show(on_other.id).new_bytes > 0  # show still reports what the parent lacks
        reverted = repo.revert(first.id, "back to a")
        assert reverted.new_bytes == 0 and reverted.branch == "main"
        assert repo.engine.store.pack_ids() == packs
