"""T7: commit and checkout on a full filesystem (a small tmpfs; needs root): a clean error, nothing changed."""

import os
import shutil
import subprocess

import numpy as np
import pytest
from safetensors.numpy import save_file

from ckstore import Repo


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def ck(*args):
    return subprocess.run([shutil.which("ckstore"), *map(str, args)], capture_output=True, text=True)


def test_commit_and_checkout_on_a_full_disk(small_fs, tmp_path):
    small, huge = tmp_path / "small.safetensors", tmp_path / "huge.safetensors"
    save_file({"a": np.ones(1000, np.float32)}, small)
    rng = np.random.default_rng(0)
    save_file({f"t{i}": rng.standard_normal(1_000_000).astype(np.float32) for i in range(8)}, huge)  # 32 MB
    repo_dir = small_fs / "repo"
    Repo.init(repo_dir).close()
    assert ck("-C", repo_dir, "commit", small, "-m", "fits").returncode == 0
    r = ck("-C", repo_dir, "commit", huge, "-m", "does not fit")
    assert r.returncode == 1 and r.stderr.startswith("error: No space left on device"), r.stderr
    assert "Traceback" not in r.stderr
    with Repo.open(repo_dir) as repo:
        assert [c.message for c in repo.log()] == ["fits"]
        assert repo.fsck(read_data=True).ok
        assert list((repo.dir / "tmp").iterdir()) == []  # temp space released
    filler = small_fs / "filler"
    free = shutil.disk_usage(small_fs).free
    filler.write_bytes(b"\0" * max(0, free - 2048))
    with Repo.open(repo_dir) as repo:
        dest = small_fs / "out"
        with pytest.raises(OSError):
            repo.checkout("HEAD", dest)
        assert not dest.exists() or list(dest.iterdir()) == []  # nothing half-written under any name
    filler.unlink()
    with Repo.open(repo_dir) as repo:  # works once space is freed
        repo.checkout("HEAD", small_fs / "out", force=True)
        assert (small_fs / "out/small.safetensors").read_bytes() == small.read_bytes()
