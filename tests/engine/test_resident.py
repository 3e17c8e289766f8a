"""Input pages leave the resident set once a commit is past them."""

import os

import pytest



def _status_kib(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


def _rss_file_kib() -> int:
    return _status_kib("RssFile")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_drop_range_leaves_the_resident_set_but_not_the_data(tmp_path):
    from ckstore.formats.base import drop_range, map_file
    data = os.urandom(1 << 20) * 32
    (tmp_path / "f").write_bytes(data)
    view = map_file(tmp_path / "f")
    before = _rss_file_kib()
    assert bytes(view[::4096]) == data[::4096]  # touch every page
    touched = _rss_file_kib()
    assert touched - before > 24 * 1024
    pos = 0
    for k in range((3 << 20) + 5, len(view) + (3 << 20), 3 << 20):  # unaligned ends, as chunk ends are
        pos = drop_range(view.obj, pos, k)
        assert pos % 4096 == 0 or pos == len(view)
    assert pos == len(view)
    assert _rss_file_kib() < touched - 24 * 1024
    assert bytes(view) == data  # the bytes are all still there


def test_commit_of_a_mapped_file_leaves_little_of_it_resident(tmp_path):
    """The commit reads a 48 MiB file through its mapping; afterwards hardly any of it is resident."""
    import numpy as np
    from safetensors.numpy import save_file
    from ckstore import Repo
    path = tmp_path / "m.safetensors"
    save_file({f"t{i}": np.random.default_rng(i).standard_normal(1 << 20).astype(np.float32) for i in range(12)},
              path)
    with Repo.init(tmp_path / "r") as repo:
        repo.commit({"warm": np.zeros(4, np.float32)}, "imports and pool up", capture_env=False)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # restart the peak-RSS counter (VmHWM) from the current RSS
        before = _status_kib("VmRSS")
        repo.commit(path, "v0", capture_env=False)
        print("peak above start KiB", _status_kib("VmHWM") - before)
        assert _status_kib("VmHWM") - before < 40 * 1024  # the file is 48 MiB
        out = tmp_path / "out"
        repo.checkout("HEAD", out)
        assert (out / "m.safetensors").read_bytes() == path.read_bytes()
        # the same file again under a new path, after a small file: every chunk is known, so the two workers
        # only hash and would outrun the one whole-file hash; the stream waits for it instead of mapping it all
        other = tmp_path / "copy"
        other.mkdir()
        (other / "a.json").write_text("{}")
        (other / "m.safetensors").write_bytes(path.read_bytes())
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _status_kib("VmRSS")
        repo.commit(other, "v1", capture_env=False)
        assert _status_kib("VmHWM") - before < 40 * 1024
        assert repo.show().new_bytes < 64 * 1024
